"""Experiment configs: load `get_config()` files, apply `--config.KEY=VALUE`, validate."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import importlib.util
import math
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections

from jaxnas.errors import ConfigError  # noqa: F401 - re-exported: config.ConfigError


# ----------------------------------------------------------------------------------
# Loading and overriding.


def load_config(path: str) -> ml_collections.ConfigDict:
    """Imports the Python file at `path` and returns its `get_config()`, locked."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location("_jaxnas_config", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file {path!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        with _package_importable(path):
            spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"config file {path!r} has a syntax error at line {e.lineno}: "
                          f"{e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any failure of the user's file is reported
        raise ConfigError(f"config file {path!r} failed to load: {type(e).__name__}: "
                          f"{e}{_user_line(e, path)}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config()")
    try:
        config = module.get_config()
    except Exception as e:  # noqa: BLE001 - as above: name the file and line
        raise ConfigError(f"get_config() in {path!r} failed: {type(e).__name__}: "
                          f"{e}{_user_line(e, path)}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {path!r} returned {type(config).__name__}, "
            "expected ml_collections.ConfigDict"
        )
    for key, value in OPTIONAL_DEFAULTS.items():  # so --config.KEY can set them
        if key not in config:
            config[key] = value
    config.lock()
    return config


# Optional top-level keys every loaded config gets when its file leaves them out.
OPTIONAL_DEFAULTS: dict[str, Any] = {"tensorboard": True}  # jaxnas.tensorboard


@contextlib.contextmanager
def _package_importable(path: str):
    """Lets a config file import its package's siblings by the package's name, as
    ``experiments/gdas_digits.py`` does ``from experiments import darts_digits``: the
    folder above the outermost package holding `path` (folders with ``__init__.py``)
    is on ``sys.path`` while the file runs. The example configs are files of the
    repository, not installed modules, so this works from any directory."""
    top = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(os.path.join(top, "__init__.py")):
        yield
        return
    while os.path.isfile(os.path.join(os.path.dirname(top), "__init__.py")):
        top = os.path.dirname(top)
    root = os.path.dirname(top)
    sys.path.insert(0, root)
    try:
        yield
    finally:
        if root in sys.path:
            sys.path.remove(root)


def _user_line(error: BaseException, path: str) -> str:
    """" (line N)" of the deepest traceback frame in `path`, or ""."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f" (line {frames[-1].lineno})" if frames else ""


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key of `config` as "a.b.c"."""
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, name + "."))
        else:
            keys.append(name)
    return keys


def _parse_value(text: str, current: Any, key: str) -> Any:
    """Parses the text of an override into the type of the current value."""
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected a number") from None
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    if current is None:
        if text.lower() == "none":
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    if isinstance(current, str):
        return text
    raise ConfigError(f"--config.{key}: values of type {type(current).__name__} "
                      "cannot be set from the command line")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies `KEY=VALUE` strings (the part after `--config.`) to `config` in place."""
    known = flat_keys(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--config.{item}: expected --config.KEY=VALUE")
        key, text = item.split("=", 1)
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint} "
                              f"(known keys: {', '.join(sorted(known))})")
        parent = config
        *path, leaf = key.split(".")
        for part in path:
            parent = parent[part]
        current = parent[leaf]
        value = _parse_value(text, current, key)
        with parent.ignore_type():
            parent[leaf] = value


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.KEY=VALUE` / `--config.KEY VALUE` from other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg}: missing value")
                body = f"{body}={argv[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


_flat_keys = flat_keys  # the old private name


# ----------------------------------------------------------------------------------
# Validation: rules keyed by dotted config path. Strategies and data register theirs.


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a config value must satisfy; `describe` says it in words."""

    check: Callable[[Any], bool]
    describe: str


def choice(*allowed: Any) -> Rule:
    return Rule(lambda v: v in allowed, "one of " + ", ".join(repr(a) for a in allowed))


def positive(kind: type = float) -> Rule:
    return Rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(v) and v > 0 and (kind is float or float(v).is_integer()),
        f"a positive {'integer' if kind is int else 'number'}",
    )


def non_negative(kind: type = float) -> Rule:
    return Rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(v) and v >= 0 and (kind is float or float(v).is_integer()),
        f"a non-negative {'integer' if kind is int else 'number'}",
    )


def in_range(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    def check(v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    return Rule(check, f"a number in {left}{lo}, {hi}{right}")


def integer_or_minus_one() -> Rule:
    return Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
                "a non-negative integer, or -1 for 'not set'")


def optional_str() -> Rule:
    return Rule(lambda v: v is None or (isinstance(v, str) and v != ""),
                "a non-empty string or None")


def validate(config: ml_collections.ConfigDict,
             rules: dict[str, Rule],
             required: Iterable[str] = ()) -> None:
    """Checks every key that has a rule; raises ConfigError naming key, value, rule."""
    flat = set(flat_keys(config))
    problems = []
    for key in required:
        if key not in flat:
            problems.append(f"config key {key!r} is missing")
    for key, rule in rules.items():
        if key not in flat:
            continue
        value = config
        for part in key.split("."):
            value = value[part]
        if not rule.check(value):
            problems.append(f"config.{key}={value!r} is not allowed: expected {rule.describe}")
    if problems:
        raise ConfigError("; ".join(problems))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (a config as JSON) as {"a.b.c": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def choice_from(module: str, name: str) -> Rule:
    """`choice` of the values the code itself accepts: the tuple `module.name`.

    Read from the module's source with `ast` (a literal tuple, or the keys of a
    literal dict), so that validation imports no JAX and a rule cannot drift from the
    code; a value the source does not spell literally is taken by importing it.
    """
    return choice(*code_constant(module, name))


def code_constant(module: str, name: str) -> tuple:
    """The literal tuple (or literal dict keys) bound to `name` at the top of `module`,
    following a ``from X import name`` re-export; imported when not literal."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        with open(spec.origin) as f:
            tree = ast.parse(f.read(), spec.origin)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and any(
                    (a.asname or a.name) == name and a.name == name for a in node.names):
                return code_constant(node.module, name)
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
                continue
            try:
                if isinstance(node.value, ast.Dict):
                    return tuple(ast.literal_eval(k) for k in node.value.keys)
                return tuple(ast.literal_eval(node.value))
            except ValueError:
                break  # computed: ask the module itself
    return tuple(getattr(importlib.import_module(module), name))


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-friendly plain-dict copy of `config`."""
    return config.to_dict()
