"""The search-space protocol and the registry of spaces by name (no JAX imported).

A space is an object with

* ``name``: its registry name ("darts", "chain", ...);
* ``init_arch(key)``: the continuous architecture parameters a gradient method starts
  from (a pytree of float arrays);
* ``derive(weights)``: op weights (the tree of ``init_arch``) -> a discrete architecture;
* ``random(key_or_rng, n)``: ``n`` uniformly random discrete architectures (an int seed,
  a ``numpy.random.Generator`` or a JAX key; the same seed gives the same list);
* ``to_json(arch)`` / ``from_json(d)``: the JSON form, a round trip;
* ``describe(arch)``: the field's own one-line string form;
* ``num_params(arch, **network_kwargs)``: the exact parameter count of the discrete
  network;
* ``validate(arch)``: the architecture checked and normalised (ValueError otherwise);
* ``network(arch, *, num_classes, model)``: the discrete flax network retrained from
  scratch (``model``: the ``config.model`` settings), and ``trainer_options(model)``,
  the keyword arguments of the retraining step that only this space's network uses;
* ``check_data(arch, *, name, num_classes, image_shape)``: ValueError when a data set
  cannot feed the architecture's network;
* ``num_choices`` (per-layer choice spaces only): the choice count of every layer.

A space class registers itself with `register`; besides building spaces from settings
(`get`) the registry answers which space a discrete architecture, a JSON object or a
command-line spec belongs to (`space_of`, `from_json`, `from_spec`), so that no code
outside `jaxnas.spaces` branches on the kind of an architecture.  A space class says so
by three class methods: ``of(arch) -> space | None`` (the space instance an
architecture belongs to, with the settings it carries), ``reads_json(obj) -> bool``, and
optionally ``parse(spec) -> arch | None`` (a command-line spec it recognises).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from jaxnas import workdir as wd

Arch = Any  # a discrete architecture of some space


@runtime_checkable
class Space(Protocol):
    """What every search space implements (see the module docstring)."""

    name: str

    def init_arch(self, key: Any) -> Any: ...

    def derive(self, weights: Any) -> Arch: ...

    def random(self, key_or_rng: Any, n: int) -> list[Arch]: ...

    def to_json(self, arch: Arch) -> dict: ...

    def from_json(self, d: Mapping[str, Any]) -> Arch: ...

    def describe(self, arch: Arch) -> str: ...

    def num_params(self, arch: Arch, **network_kwargs: Any) -> int: ...

    def validate(self, arch: Arch) -> Arch: ...


_REGISTRY: dict[str, Callable[..., Space]] = {}


def register(name: str, factory: Callable[..., Space]) -> Callable[..., Space]:
    """Registers `factory` (usually the space class) under `name`; returns it."""
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"a space named {name!r} is already registered")
    _REGISTRY[name] = factory
    return factory


def names() -> tuple[str, ...]:
    """The registered space names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str, **settings: Any) -> Space:
    """The space registered as `name`, built with `settings`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown search space {name!r}: expected one of "
                         f"{', '.join(_REGISTRY)}")
    return _REGISTRY[name](**settings)


def space_of(arch: Arch) -> Space:
    """The space (with the settings it carries) a discrete architecture belongs to."""
    for factory in _REGISTRY.values():
        space = factory.of(arch)
        if space is not None:
            return space
    raise ValueError(f"{type(arch).__name__} is an architecture of no registered "
                     f"space ({', '.join(_REGISTRY)})")


def from_json(obj: Any) -> Arch:
    """The architecture of any registered space's JSON (or of a result file's
    ``{"genotype": ...}`` wrapper).  The first space that reads it decodes it."""
    for factory in _REGISTRY.values():
        if factory.reads_json(obj):
            return factory.arch_from_json(obj)
    raise ValueError(f"JSON of no registered space ({', '.join(_REGISTRY)}): "
                     f"{str(obj)[:80]}")


def from_spec(spec: str) -> Arch:
    """A discrete architecture from a command-line spec: a JSON file of any space, or a
    spec one space recognises (a known name, the field's string form).

    The last registered space that parses specs gives the error message of a spec
    nobody recognises (the DARTS space lists its known names)."""
    if wd.isfile(spec):
        obj = read_json_file(spec)
        for factory in _REGISTRY.values():
            if factory.reads_json(obj):
                try:
                    return factory.arch_from_json(obj)
                except ValueError as e:
                    raise ValueError(f"genotype file {spec}: {e}") from None
    error = None
    for factory in _REGISTRY.values():
        parse = getattr(factory, "parse", None)
        if parse is None:
            continue
        try:
            arch = parse(spec)
        except ValueError as e:
            error = e
            continue
        if arch is not None:
            return arch
    raise error or ValueError(f"unknown architecture {spec!r}")


def read_json_file(path: str) -> Any:
    """The decoded JSON of a genotype file; ValueError naming the file otherwise."""
    try:
        return json.loads(wd.read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"genotype file {path}: invalid JSON ({e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"genotype file {path}: not a text (JSON) file") from None


def rng_of(key_or_rng: Any) -> np.random.Generator:
    """A numpy generator from an int seed, a generator (returned as is) or a JAX key."""
    if isinstance(key_or_rng, np.random.Generator):
        return key_or_rng
    if isinstance(key_or_rng, (int, np.integer)) and not isinstance(key_or_rng, bool):
        if key_or_rng < 0:
            raise ValueError(f"seed of the random architectures: expected >= 0, got "
                             f"{key_or_rng}")
        return np.random.default_rng(int(key_or_rng))
    import jax  # only for a JAX key

    data = np.asarray(jax.random.key_data(key_or_rng)).reshape(-1)
    return np.random.default_rng(data.astype(np.uint64).tolist())


def check_count(n: int) -> int:
    """`n` as a non-negative int (how many random architectures)."""
    if int(n) < 0:
        raise ValueError(f"number of random architectures: expected >= 0, got {n}")
    return int(n)
