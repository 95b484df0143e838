"""P-DARTS (Chen et al. 2019) over the bilevel core: one stage of the progressive search
(a DARTS search of a deeper supernet whose edges keep only the ops the previous stage
ranked highest), the pruning between stages, the skip-connect dropout and the final
derivation with at most `max_skips` skip-connects in the normal cell.

- **Op sets per edge** (`EdgeOps`: op names per edge, normal and reduce): the loop
  supernet builds and runs only those ops (`DartsSupernet(edge_ops=...)`), so a stage
  with 5 or 3 ops per edge does 5/8 or 3/8 of the mixed ops' work; the fused supernet
  computes every op and the pruned ones get weight 0 (no work saved, but on the CPU its
  stacked kernels beat the loop form's per-op ones: benchmarks/results/2026-12-02-family/).
  The alphas of
  a stage are ``{cell: a[E, K_stage]}``, one column per kept op; `pruned_relaxation`
  scatters their softmax into DARTS' ``w[E, len(primitives)]`` (0 on pruned ops), so
  records, plots, early stop and derivation read DARTS-shaped weights.
- **Pruning** (`prune`): per edge, the ops with the smallest softmax weights are dropped
  one at a time (the authors' `get_min_k`: argmin, first on ties) until `keep` remain.
- **Skip dropout**: inverted dropout after every stride-1 identity op in both halves of
  a step (`skip_dropout_relaxation`), at the authors' rate schedule
  (`dropout_schedule`): rate * (E - e - 1) / E in the warm-up epochs e < W, then
  rate * exp(-0.2 (e - W)).
- **Final derivation** (`derive`): DARTS' rule (best non-`none` op per edge, two
  strongest inputs per node) on the last stage's weights; while the normal cell has more
  than `max_skips` skip-connects, the chosen skip-connect edge with the smallest skip
  weight gets weight 0 and the cell is derived again (the authors' `delete_min_sk_prob`
  loop).

The stages themselves (deeper supernet, new weights and alphas each stage, checkpoints,
resume across stage changes) are run by `jaxnas.runners.pdarts`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import relax as relax_lib
from jaxnas.spaces import cells, genotypes
from jaxnas.spaces.darts import CELL_TYPES, DartsSpace
from jaxnas.spaces.genotypes import Genotype
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts

# (normal, reduce): for each cell type, the op names of every edge, in primitive order
EdgeOps = tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]
SKIP = "skip_connect"


def full_ops(primitives: Sequence[str], num_edges: int) -> EdgeOps:
    """Every primitive on every edge (the first stage)."""
    cell = tuple(tuple(primitives) for _ in range(num_edges))
    return (cell, cell)


def check_ops(ops: EdgeOps, primitives: Sequence[str], num_edges: int) -> EdgeOps:
    """`ops` as tuples, checked: two cell types, `num_edges` edges each, every edge a
    non-empty set of distinct primitives in primitive order, the same count on every
    edge (one alpha matrix per cell)."""
    primitives = tuple(primitives)
    ops = tuple(tuple(tuple(edge) for edge in cell) for cell in ops)
    if len(ops) != 2 or any(len(cell) != num_edges for cell in ops):
        raise ValueError(f"edge ops: expected (normal, reduce), {num_edges} edges each, "
                         f"got {[len(c) for c in ops]} edges")
    counts = {len(edge) for cell in ops for edge in cell}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"edge ops: every edge needs the same positive number of ops, "
                         f"got counts {sorted(counts)}")
    for cell in ops:
        for edge in cell:
            unknown = [p for p in edge if p not in primitives]
            if unknown:
                raise ValueError(f"edge ops: unknown op(s) {unknown}: expected names "
                                 f"among {primitives}")
            if list(edge) != sorted(set(edge), key=primitives.index):
                raise ValueError(f"edge ops: {edge} must be distinct ops in primitive "
                                 f"order {primitives}")
    return ops


def column_table(ops: EdgeOps, primitives: Sequence[str]) -> dict[str, np.ndarray]:
    """{cell: int[E, K]}: the primitive column of each kept op of each edge."""
    primitives = tuple(primitives)
    return {cell: np.asarray([[primitives.index(p) for p in edge] for edge in cell_ops],
                             np.int32)
            for cell, cell_ops in zip(CELL_TYPES, ops)}


def expand(weights: Mapping[str, Any], ops: EdgeOps, primitives: Sequence[str]
           ) -> dict[str, jax.Array]:
    """{cell: w[E, K]} of the kept ops -> {cell: w[E, len(primitives)]}, 0 elsewhere."""
    out = {}
    for cell, cols in column_table(ops, primitives).items():
        w = jnp.asarray(weights[cell])
        rows = np.arange(cols.shape[0])[:, None]
        out[cell] = jnp.zeros((w.shape[0], len(primitives)), w.dtype).at[rows, cols].set(w)
    return out


def prune(weights: Mapping[str, Any], ops: EdgeOps, keep: int) -> EdgeOps:
    """The `keep` ops of each edge that survive P-DARTS' pruning: `weights` are the kept
    ops' softmax weights ``{cell: w[E, K]}`` (columns as in `ops`); the smallest is
    dropped, one at a time, first index on ties (the authors' `get_min_k`)."""
    out = []
    for cell, cell_ops in zip(CELL_TYPES, ops):
        w = np.asarray(weights[cell], np.float64)
        if w.shape != (len(cell_ops), len(cell_ops[0])):
            raise ValueError(f"prune: {cell} weights have shape {w.shape}, expected "
                             f"{(len(cell_ops), len(cell_ops[0]))}")
        if not 1 <= keep <= w.shape[1]:
            raise ValueError(f"prune: keep={keep}, expected 1..{w.shape[1]}")
        kept_cell = []
        for edge_ops, row in zip(cell_ops, w):
            row = row.copy()
            for _ in range(len(edge_ops) - keep):
                row[int(np.argmin(row))] = np.inf
            kept_cell.append(tuple(op for op, v in zip(edge_ops, row) if v != np.inf))
        out.append(tuple(kept_cell))
    return (out[0], out[1])


def derive(weights: Mapping[str, Any], *, primitives: Sequence[str], steps: int,
           multiplier: int | None = None, max_skips: int | None = None
           ) -> tuple[Genotype, int]:
    """DARTS' derivation of DARTS-shaped op weights, then at most `max_skips`
    skip-connects in the normal cell: while there are more, the chosen skip-connect edge
    of smallest skip weight has that weight set to 0 and the cells are derived again.
    Returns the genotype and how many skip weights were zeroed."""
    primitives = tuple(primitives)
    w = {cell: np.array(weights[cell], np.float64) for cell in CELL_TYPES}
    g = genotypes.derive(w, primitives=primitives, steps=steps, multiplier=multiplier)
    removed = 0
    if max_skips is None or SKIP not in primitives:
        return g, removed
    skip = primitives.index(SKIP)
    while sum(op == SKIP for op, _ in g.normal) > max_skips:
        chosen = [cells.edge_index(src, i // 2) for i, (op, src) in enumerate(g.normal)
                  if op == SKIP]  # two inputs per node, node by node
        weakest = min(chosen, key=lambda e: (w["normal"][e, skip], e))
        w["normal"][weakest, skip] = 0.0
        removed += 1
        g = genotypes.derive(w, primitives=primitives, steps=steps, multiplier=multiplier)
    return g, removed


def pruned_relaxation(ops: EdgeOps, primitives: Sequence[str]) -> relax_lib.Relaxation:
    """Softmax over each edge's kept ops, scattered into DARTS' op-weight columns."""
    def weights(alphas):
        return expand(relax_lib.softmax(alphas), ops, primitives)

    return relax_lib.Relaxation(weights=lambda key, alphas, step: weights(alphas),
                                expected=weights)


def skip_dropout_relaxation(base: relax_lib.Relaxation, rate: relax_lib.Schedule
                            ) -> relax_lib.Relaxation:
    """`base`'s weights plus ``"skip_dropout": {"key", "rate": rate(step)}``, the
    supernet's dropout after the identity op (a fresh key each half-step, shared by every
    loss an estimator evaluates in it). Evaluation and derivation: `base.expected`."""
    def weights(key, alphas, step):
        k_base, k_drop = jax.random.split(key)
        w = dict(base.weights(k_base, alphas, step))
        w["skip_dropout"] = {"key": k_drop, "rate": jnp.asarray(rate(step), jnp.float32)}
        return w

    return base._replace(weights=weights)


def dropout_schedule(rate: float, epochs: int, warmup_epochs: int, steps_per_epoch: int,
                     decay: float = 0.2) -> relax_lib.Schedule:
    """The authors' skip-dropout rate of the epoch e = step // steps_per_epoch:
    rate * (epochs - e - 1) / epochs while e < warmup_epochs, then
    rate * exp(-decay * (e - warmup_epochs))."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"skip dropout rate={rate!r}: expected 0 <= rate < 1")

    def schedule(step):
        e = (jnp.asarray(step) // steps_per_epoch).astype(jnp.float32)
        warm = rate * (epochs - e - 1) / epochs
        after = rate * jnp.exp(-decay * (e - warmup_epochs))
        return jnp.where(e < warmup_epochs, warm, after).astype(jnp.float32)

    return schedule


@dataclasses.dataclass(frozen=True)
class StageSpace:
    """The DARTS space seen by one P-DARTS stage: alphas over each edge's kept ops,
    derivation of the DARTS-shaped weights (`derive`, with `max_skips` in the last
    stage; None in the others)."""

    base: DartsSpace
    ops: EdgeOps
    max_skips: int | None = None

    name = "darts"

    def init_arch(self, key: Any) -> dict:
        """DARTS' initial logits, ``init_scale * N(0, 1)``, one column per kept op."""
        k1, k2 = jax.random.split(key)
        shape = (self.base.num_edges, len(self.ops[0][0]))
        return {"normal": self.base.init_scale * jax.random.normal(k1, shape),
                "reduce": self.base.init_scale * jax.random.normal(k2, shape)}

    def derive(self, weights: Mapping[str, Any]) -> Genotype:
        g, _ = derive(weights, primitives=self.base.primitives, steps=self.base.steps,
                      multiplier=self.base.multiplier, max_skips=self.max_skips)
        return self.base._with_concat(g)


def pdarts_stage(model: nn.Module, *, ops: EdgeOps, skip_rate: relax_lib.Schedule | None
                 = None, max_skips: int | None = None, **darts_settings: Any
                 ) -> BilevelStrategy:
    """One P-DARTS stage: DARTS (`darts_settings`: estimator, schedules, optimizers,
    warm-up) on `model` restricted to `ops`, with skip dropout at `skip_rate(step)`
    (None: none) and the final derivation's `max_skips` (None: DARTS' derivation)."""
    primitives = tuple(model.primitives)
    ops = check_ops(ops, primitives, DartsSpace(primitives, model.steps).num_edges)
    space = StageSpace(DartsSpace(primitives=primitives, steps=model.steps,
                                  multiplier=model.multiplier), ops, max_skips)
    relax = pruned_relaxation(ops, primitives)
    if skip_rate is not None:
        relax = skip_dropout_relaxation(relax, skip_rate)
    darts_settings.pop("space", None)
    return darts(model.clone(edge_ops=ops), space=space, relax=relax, **darts_settings)
