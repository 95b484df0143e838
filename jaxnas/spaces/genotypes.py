"""DARTS genotypes: data model, derivation from op weights, validation, (de)coding."""

from __future__ import annotations

import ast
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from jaxnas import workdir as wd
from jaxnas.spaces import base

# The order is a contract: rows of architecture weights index ops in this order.
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# Every op a genotype may name (ops.OPS builds exactly these).
OP_NAMES: tuple[str, ...] = PRIMITIVES + ("sep_conv_7x7", "conv_7x1_1x7")

Edge = tuple[str, int]


class Genotype(NamedTuple):
    """A discrete DARTS architecture: (op, input state) per edge, two edges per node."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]


_FIELDS = Genotype._fields


def make(normal: Sequence[Sequence[Any]], normal_concat: Sequence[int],
         reduce: Sequence[Sequence[Any]], reduce_concat: Sequence[int]) -> Genotype:
    """A Genotype with plain tuples of (str, int) from any sequences (lists, ranges)."""

    def edges(cell: str, value: Any) -> tuple[Edge, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{cell}: expected a list of (op, input) pairs, got "
                             f"{value!r}")
        out = []
        for e, pair in enumerate(value):
            if (isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence)
                    or len(pair) != 2 or not isinstance(pair[0], str)
                    or not _is_int(pair[1])):
                raise ValueError(f"{cell} edge {e}: expected an (op name, input index) "
                                 f"pair, got {pair!r}")
            out.append((str(pair[0]), int(pair[1])))
        return tuple(out)

    def concat(cell: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value,
                                                             (Sequence, np.ndarray)):
            raise ValueError(f"{cell}: expected a list of node indices, got {value!r}")
        if not all(_is_int(v) for v in value):
            raise ValueError(f"{cell}: node indices must be integers, got {value!r}")
        return tuple(int(v) for v in value)

    return Genotype(edges("normal", normal), concat("normal_concat", normal_concat),
                    edges("reduce", reduce), concat("reduce_concat", reduce_concat))


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))




def softmax_rows(w: np.ndarray) -> np.ndarray:
    """The softmax of each row (last axis) of `w`, in numpy (float64 for float64 in)."""
    e = np.exp(w - w.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _parse_cell(w: np.ndarray, primitives: Sequence[str],
                steps: int) -> tuple[Edge, ...]:
    """DARTS `_parse`: per node, the 2 strongest inputs and their best non-none op."""
    none = primitives.index("none") if "none" in primitives else None
    ops = [k for k in range(len(primitives)) if k != none]
    gene: list[Edge] = []
    start = 0
    for i in range(steps):
        rows = w[start:start + i + 2]
        # Python's sort is stable: equal strengths keep increasing input order.
        strongest = sorted(range(i + 2), key=lambda j: -max(rows[j][k] for k in ops))
        for j in strongest[:2]:
            k_best = None
            for k in ops:  # first maximum wins, as in the reference
                if k_best is None or rows[j][k] > rows[j][k_best]:
                    k_best = k
            gene.append((primitives[k_best], j))
        start += i + 2
    return tuple(gene)


def derive(arch: Mapping[str, Any], primitives: Sequence[str] = PRIMITIVES,
           steps: int = 4, multiplier: int | None = None,
           softmax: bool = False) -> Genotype:
    """The discrete genotype of op weights, exactly as DARTS' `Network.genotype()`.

    Args:
      arch: {"normal": w[E, K], "reduce": w[E, K]} with E = sum(2 + i for i < steps)
        edges ordered node by node (then by input state) and K = len(primitives).
        DARTS ranks edges by their largest non-`none` *softmax* weight, so pass softmax
        weights, or raw alphas with `softmax=True` (raw logits rank edges differently).
      primitives: the op of each column; a `none` column is never chosen.
      steps: intermediate nodes per cell.
      multiplier: how many of the last nodes are concatenated (default: all `steps`).
      softmax: apply a softmax over each row first.

    Per node, the two inputs with the largest best non-`none` weight are kept, listed
    strongest first (ties keep increasing input order), each with its best non-`none`
    op (ties: first in `primitives`).
    Concat is range(2 + steps - multiplier, 2 + steps).
    """
    primitives = tuple(primitives)
    if len([p for p in primitives if p != "none"]) == 0:
        raise ValueError("derive: primitives has no op other than 'none'")
    multiplier = steps if multiplier is None else multiplier
    if not 1 <= multiplier <= steps:
        raise ValueError(f"derive: multiplier must be in 1..{steps}, got {multiplier}")
    n_edges = sum(2 + i for i in range(steps))
    cells = {}
    for cell in ("normal", "reduce"):
        if cell not in arch:
            raise ValueError(f"derive: arch has no {cell!r} weights (keys: "
                             f"{sorted(arch)})")
        w = np.asarray(arch[cell], dtype=np.float64)
        if w.shape != (n_edges, len(primitives)):
            raise ValueError(f"derive: {cell} weights have shape {w.shape}, expected "
                             f"({n_edges}, {len(primitives)}) for {steps} steps and "
                             f"{len(primitives)} primitives")
        cells[cell] = _parse_cell(softmax_rows(w) if softmax else w, primitives, steps)
    concat = tuple(range(2 + steps - multiplier, 2 + steps))
    return Genotype(cells["normal"], concat, cells["reduce"], concat)


def validate(genotype: Genotype, steps: int | None = None,
             allowed_ops: Sequence[str] = OP_NAMES) -> Genotype:
    """Check a genotype, raising ValueError naming the problem; returns it normalised.

    Each cell needs an even, non-zero number of edges (2 per node; `steps` nodes if
    given, else len // 2 — more than 4 is fine), known op names, inputs of node i within
    0..i+1 (0, 1: cell inputs; 2 + j: node j) and concat indices of distinct nodes
    within 2..steps+1 (skipping nodes is fine).
    """
    if not isinstance(genotype, tuple) or len(genotype) != 4:
        raise ValueError(f"expected a Genotype{_FIELDS}, got {genotype!r}")
    g = make(*genotype)
    allowed = ", ".join(allowed_ops)
    for cell in ("normal", "reduce"):
        edges, concat = getattr(g, cell), getattr(g, cell + "_concat")
        if len(edges) == 0 or len(edges) % 2:
            raise ValueError(f"{cell} cell has {len(edges)} edges: expected an even, "
                             f"non-zero number (2 per intermediate node)")
        n = len(edges) // 2
        if steps is not None and n != steps:
            raise ValueError(f"{cell} cell has {len(edges)} edges: expected "
                             f"{2 * steps} for {steps} intermediate nodes")
        for e, (op, src) in enumerate(edges):
            if op not in allowed_ops:
                raise ValueError(f"{cell} cell edge {e}: unknown op {op!r} (allowed: "
                                 f"{allowed})")
            node = e // 2
            if not 0 <= src <= node + 1:
                raise ValueError(f"{cell} cell node {node} (edge {e}): input index "
                                 f"{src} out of range (allowed 0..{node + 1})")
        if len(concat) == 0:
            raise ValueError(f"{cell}_concat is empty")
        for c in concat:
            if not 2 <= c <= n + 1:
                raise ValueError(f"{cell}_concat: node index {c} out of range (allowed "
                                 f"2..{n + 1} for {n} intermediate nodes)")
        if len(set(concat)) != len(concat):
            raise ValueError(f"{cell}_concat: repeated node index in {list(concat)}")
    return g


def to_str(g: Genotype) -> str:
    """The DARTS literal: Genotype(normal=[('sep_conv_3x3', 0), ...], ...)."""
    g = make(*g)
    return (f"Genotype(normal={list(g.normal)!r}, "
            f"normal_concat={list(g.normal_concat)!r}, "
            f"reduce={list(g.reduce)!r}, "
            f"reduce_concat={list(g.reduce_concat)!r})")


def _literal(node: ast.expr, field: str) -> Any:
    """A literal value, or `range(a[, b[, c]])` with integer literals, without eval."""
    if isinstance(node, ast.Call):
        if (not isinstance(node.func, ast.Name) or node.func.id != "range"
                or node.keywords or not 1 <= len(node.args) <= 3):
            raise ValueError(f"{field}: only literals and range(a, b) are allowed")
        args = [_literal(a, field) for a in node.args]
        if not all(_is_int(a) for a in args):
            raise ValueError(f"{field}: range() needs integer literals")
        return list(range(*args))
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, field) for e in node.elts]
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError) as e:
        raise ValueError(f"{field}: not a literal ({e})") from None


def from_str(s: str) -> Genotype:
    """Parse the DARTS literal (either quote style, `range(a, b)` concat), safely."""
    try:
        tree = ast.parse(s.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not a Genotype(...) string: {e}") from None
    call = tree.body
    if (not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name)
            or call.func.id != "Genotype"):
        raise ValueError(f"not a Genotype(...) string: {s[:80]!r}")
    if len(call.args) > len(_FIELDS):
        raise ValueError(f"Genotype(...) takes at most {len(_FIELDS)} arguments")
    values = {f: _literal(a, f) for f, a in zip(_FIELDS, call.args)}
    for kw in call.keywords:
        if kw.arg not in _FIELDS:
            raise ValueError(f"Genotype(...): unknown field {kw.arg!r} (fields: "
                             f"{', '.join(_FIELDS)})")
        if kw.arg in values:
            raise ValueError(f"Genotype(...): field {kw.arg!r} given twice")
        values[kw.arg] = _literal(kw.value, kw.arg)
    missing = [f for f in _FIELDS if f not in values]
    if missing:
        raise ValueError(f"Genotype(...): missing {', '.join(missing)}")
    return validate(make(**values))


# From the reference DARTS cnn/genotypes.py, in its own literal form.
DARTS_V1 = from_str("Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                    "('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), "
                    "('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
                    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), "
                    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
                    "('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])")
DARTS_V2 = from_str("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
                    "('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), "
                    "('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
                    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
                    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
                    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
KNOWN_GENOTYPES: Mapping[str, Genotype] = {
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
    "DARTS": DARTS_V2,
}


def to_json(g: Genotype) -> dict[str, list]:
    """A JSON-ready dict: {"normal": [[op, input], ...], "normal_concat": [...], ...}.
    """
    g = make(*g)
    return {"normal": [list(e) for e in g.normal],
            "normal_concat": list(g.normal_concat),
            "reduce": [list(e) for e in g.reduce],
            "reduce_concat": list(g.reduce_concat)}


def from_json(d: Mapping[str, Any]) -> Genotype:
    """Inverse of `to_json` (validated)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"genotype JSON must be an object, got {type(d).__name__}")
    missing = [f for f in _FIELDS if f not in d]
    if missing:
        raise ValueError(f"genotype JSON is missing {', '.join(missing)} (fields: "
                         f"{', '.join(_FIELDS)})")
    return validate(make(**{f: d[f] for f in _FIELDS}))


def resolve(spec: str) -> Genotype:
    """A genotype from a known name, a JSON file, or a `Genotype(...)` literal.

    A JSON file holds either a bare genotype object or an object whose "genotype" key
    holds one (or a `Genotype(...)` string), as written by a search run.
    """
    if spec in KNOWN_GENOTYPES:
        return KNOWN_GENOTYPES[spec]
    if spec.lstrip().startswith("Genotype"):
        return from_str(spec)
    if wd.isfile(spec):
        d = base.read_json_file(spec)
        if isinstance(d, Mapping) and "genotype" in d:
            d = d["genotype"]
        try:
            return from_str(d) if isinstance(d, str) else from_json(d)
        except ValueError as e:
            raise ValueError(f"genotype file {spec}: {e}") from None
    raise ValueError(f"unknown genotype {spec!r}: expected a known name "
                     f"({', '.join(KNOWN_GENOTYPES)}), a path to a JSON file, or a "
                     f"Genotype(...) string")
