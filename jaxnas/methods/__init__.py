"""Search methods by config string: each method's config rules and the loop hooks
that run it (`jaxnas.search.run` looks them up here). No JAX is imported here."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

import ml_collections

from jaxnas import config as C
from jaxnas.errors import ConfigError

DATASETS_HINT = "digits (embedded) or a TFDS name prepared in data.data_dir, e.g. cifar10"
BOOL = C.Rule(lambda v: isinstance(v, bool), "true or false")

# Keys of the loop itself (length, cadence, data), shared by every search method;
# retraining uses them too, less the bilevel split.
LOOP_RULES: dict[str, C.Rule] = {
    "seed": C.non_negative(int),
    "epochs": C.positive(int),
    "num_steps": C.integer_or_minus_one(),
    "log_every": C.positive(int),
    "eval_every": C.non_negative(int),
    "checkpoint_every": C.positive(int),
    "keep_checkpoints": C.positive(int),
    "data.dataset": C.Rule(lambda v: isinstance(v, str) and v != "", DATASETS_HINT),
    "data.data_dir": C.Rule(lambda v: isinstance(v, str), "a directory path, or '' for "
                            "the default cache"),
    "data.batch_size": C.positive(int),
    "data.split_fraction": C.in_range(0.0, 1.0, lo_open=True, hi_open=True),
    "data.crop_padding": C.non_negative(int),
    "data.flip": BOOL,
    "data.cutout": C.non_negative(int),
}

MESH_AXES = ("data", "path", "pop")


def _mesh_axis() -> C.Rule:
    return C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                  and (v >= 1 or v == -1),
                  "a positive integer, or -1 for every device the other axes leave")


# Optional: a config without a `mesh` section puts every device on `data`.
MESH_RULES: dict[str, C.Rule] = {f"mesh.{a}": _mesh_axis() for a in MESH_AXES}
# Optional (config.load_config sets its default): TensorBoard event files.
OPTIONAL_RULES: dict[str, C.Rule] = {"tensorboard": BOOL}


def int_tuple(ok: Callable[[int], bool], describe: str) -> C.Rule:
    """A non-empty tuple/list of ints whose every element satisfies ``ok``."""
    return C.Rule(lambda v: isinstance(v, (tuple, list)) and len(v) > 0
                  and all(isinstance(x, int) and not isinstance(x, bool) and ok(x)
                          for x in v), describe)


@dataclasses.dataclass(frozen=True)
class Method:
    """A search method: its config rules (all required), cross-key checks, the mesh
    axes it can spread, and the module whose `hooks(config)` runs it in the loop."""

    name: str
    title: str                                  # as messages name it: "DARTS"
    rules: Mapping[str, C.Rule]
    loop: str                                   # module with hooks(config)
    check: Callable[[ml_collections.ConfigDict], None] = lambda config: None
    mesh_axes: tuple[str, ...] = ("data",)      # axes that may exceed 1
    # a module with run(config, workdir) for a method that is more than one loop run
    # (P-DARTS' stages); None: `jaxnas.runners.loop.run` with `hooks(config)`
    runner: str | None = None

    def hooks(self, config: ml_collections.ConfigDict) -> Any:
        """The loop hooks of this method (imports its JAX code)."""
        return importlib.import_module(self.loop).hooks(config)


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds `method` under its name (a later registration of the name replaces it)."""
    _REGISTRY[method.name] = method
    return method


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: Any) -> Method:
    """The method `config.method` names; ConfigError listing the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"config.method={name!r} is not allowed: expected one of "
                          f"{', '.join(repr(m) for m in _REGISTRY)}")
    return _REGISTRY[name]


def validate(config: ml_collections.ConfigDict) -> Method:
    """Checks a search config against its method's rules; returns the method."""
    method = get(config.get("method"))
    rules = {**LOOP_RULES, **method.rules}
    C.validate(config, {**rules, **MESH_RULES, **OPTIONAL_RULES}, required=list(rules))
    mesh = config.get("mesh")
    if mesh is not None:
        unknown = sorted(set(mesh.keys()) - set(MESH_AXES))
        if unknown:
            raise ConfigError(f"config.mesh has unknown axes {', '.join(unknown)}: "
                              f"expected {', '.join(MESH_AXES)}")
        if sum(1 for a in MESH_AXES if mesh.get(a, 1) == -1) > 1:
            raise ConfigError(
                "config.mesh: at most one of mesh.data, mesh.path, mesh.pop may be -1 "
                f"(got {', '.join(f'mesh.{k}={v}' for k, v in mesh.items())})")
        fixed = [a for a in MESH_AXES if a not in method.mesh_axes]
        if any(mesh.get(a, 1) != 1 for a in fixed):
            raise ConfigError(
                ", ".join(f"config.mesh.{a}={mesh.get(a, 1)}" for a in fixed)
                + f" are not allowed for {method.title} (it has no "
                + " or ".join({"path": "paths", "pop": "population"}[a] for a in fixed)
                + " to spread): expected 1")
    method.check(config)
    return method


def _register_builtins() -> None:
    """Imports every module of this package: each built-in method registers itself
    there (a new method is one new module here, no list to edit)."""
    import pkgutil
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_register_builtins()
