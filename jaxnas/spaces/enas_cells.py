"""ENAS' cell decisions on the DARTS cell space: for each intermediate node of the normal
and the reduction cell, two inputs (any earlier state) and one op for each, as ENAS'
controller samples them (Pham et al. 2018, the convolutional cell search).

A path is int32[2 * steps * 4]: for the normal cell then the reduction cell, for node
j = 0..steps-1, (input_a, op_a, input_b, op_b) with inputs in [0, j + 2) (0, 1: the cell's
inputs; 2 + i: node i) and ops indexing `ops` (the DARTS primitives without `none`).
`arch_weights(path)` turns it into the op-weight matrices a DARTS supernet takes
(one-hot rows on the chosen edges, zero rows on the others), so one shared-weight
`DartsSupernet` trains and scores every sampled cell; `genotype(path)` is the DARTS
`Genotype` of the sampled cells, retrainable with `jaxnas train` like a DARTS result.
When both inputs of a node are the same state, the node is the sum of the two ops on
it (with the same op twice: twice that op, whose weights the supernet shares).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jaxnas.spaces import cells, genotypes

CELL_TYPES = ("normal", "reduce")


@dataclasses.dataclass(frozen=True)
class EnasCellSpace:
    """ENAS cells over `primitives` (the supernet's op order) with `steps` nodes."""

    steps: int = 4
    primitives: tuple[str, ...] = genotypes.PRIMITIVES

    def __post_init__(self) -> None:
        object.__setattr__(self, "primitives", tuple(self.primitives))
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r}: expected a positive integer")
        if not self.ops:
            raise ValueError(f"primitives {self.primitives}: no op besides 'none'")

    @property
    def ops(self) -> tuple[str, ...]:
        """The ops a node may choose: every primitive but `none`."""
        return tuple(p for p in self.primitives if p != "none")

    @property
    def num_layers(self) -> int:
        """Decisions in a path (the controller's sequence length)."""
        return len(CELL_TYPES) * self.steps * 4

    @property
    def num_choices(self) -> tuple[int, ...]:
        """Choices of each decision: j + 2 inputs, len(ops) ops, for each node j."""
        k = len(self.ops)
        per_cell = sum(((j + 2, k, j + 2, k) for j in range(self.steps)), ())
        return per_cell * len(CELL_TYPES)

    def _edges_and_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """For each decision pair (input, op) of a cell: the arch row of every possible
        input ([steps * 2, steps + 1], -1 where out of range) and the arch column of
        every op ([len(ops)])."""
        rows = np.full((self.steps * 2, self.steps + 1), -1, np.int32)
        for j in range(self.steps):
            for half in range(2):
                for src in range(j + 2):
                    rows[2 * j + half, src] = cells.edge_index(src, j)
        col = np.asarray([self.primitives.index(op) for op in self.ops], np.int32)
        return rows, col

    def arch_weights(self, path: Any, dtype: Any = None) -> dict:
        """{"normal": w[E, K], "reduce": w[E, K]}: the sampled edges' one-hot op rows
        (summed where a node takes the same input twice), zeros elsewhere. Traceable:
        `path` may be a jax array under jit/vmap."""
        import jax
        import jax.numpy as jnp

        dtype = dtype or jnp.float32
        rows, col = self._edges_and_columns()
        e, k = cells.num_edges(self.steps), len(self.primitives)
        p = jnp.asarray(path).reshape(len(CELL_TYPES), self.steps * 2, 2)
        out = {}
        for c, name in enumerate(CELL_TYPES):
            edge = jnp.asarray(rows)[jnp.arange(self.steps * 2), p[c, :, 0]]
            op_col = jnp.asarray(col)[p[c, :, 1]]
            out[name] = jnp.einsum("de,dk->ek", jax.nn.one_hot(edge, e, dtype=dtype),
                                   jax.nn.one_hot(op_col, k, dtype=dtype))
        return out

    def validate_path(self, path: Sequence[int]) -> np.ndarray:
        """`path` as int32[num_layers]; ValueError naming the first decision out of
        range."""
        p = np.asarray(path)
        if p.shape != (self.num_layers,) or not np.issubdtype(p.dtype, np.integer):
            raise ValueError(f"ENAS cell path: expected {self.num_layers} integers, got "
                             f"{path!r}")
        for i, (v, n) in enumerate(zip(p, self.num_choices)):
            if not 0 <= v < n:
                raise ValueError(f"ENAS cell path: decision {i} = {int(v)} is out of "
                                 f"range: expected 0..{n - 1}")
        return p.astype(np.int32)

    def genotype(self, path: Sequence[int]) -> genotypes.Genotype:
        """The DARTS Genotype of a path: per node its two (op, input) edges; every
        node concatenated (ENAS' cells concatenate the nodes no other node reads; the
        DARTS networks concatenate all, as their genotypes say)."""
        p = self.validate_path(path).reshape(len(CELL_TYPES), self.steps, 2, 2)
        cells_ = [[(self.ops[int(op)], int(src)) for j in range(self.steps)
                   for src, op in p[c, j]] for c in range(len(CELL_TYPES))]
        concat = range(2, 2 + self.steps)
        return genotypes.make(cells_[0], concat, cells_[1], concat)
