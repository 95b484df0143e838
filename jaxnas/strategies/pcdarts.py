"""PC-DARTS (Xu et al. 2020) over the bilevel core: partial channel connections in the
supernet and edge normalisation in the relaxation.

- Partial channels are the supernet's (`DartsSupernet(partial_channels=K,
  mixed_op="loop")`): 1/K of an edge's input channels go through its mixed op, the rest
  bypass it, then channel shuffle. The strategy takes the model as built.
- Edge normalisation: each edge e also has a logit beta_e; its output is weighted by
  softmax over the edges into the same node. Chosen design: the betas live beside the
  alphas in the architecture parameters (``{"normal", "reduce", "normal_edges",
  "reduce_edges"}``, `EdgeNormalizedSpace`) and `relax.edge_normalized_relaxation` folds
  beta_e into the op weights (beta_e * softmax(alpha_e)_k). Why: the mixed op is linear in
  its weights, so the supernet's architecture input stays the DARTS one (f32[E, K] per
  cell), every formulation, plot, record and the early stop work unchanged, and DARTS'
  derivation of these folded weights *is* PC-DARTS' derivation by alpha * beta.
  With partial channels the bypass is scaled by the edge's weight sum, = beta_e, so the
  forward is the authors' (beta multiplies the whole edge output, bypass included).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxnas import relax
from jaxnas.spaces.darts import DartsSpace
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts


def node_groups(steps: int) -> tuple[int, ...]:
    """Edges into each intermediate node of a DARTS cell, in edge order: 2, 3, ..."""
    return tuple(2 + j for j in range(steps))


class EdgeNormalizedSpace:
    """A DARTS cell space whose architecture parameters also hold one edge logit per
    edge and cell type (PC-DARTS' betas, ``init_scale * N(0, 1)`` as the authors');
    derivation, formats and counts are the wrapped space's (it derives from op weights,
    which carry the betas folded in)."""

    def __init__(self, base: DartsSpace):
        if not isinstance(base, DartsSpace):
            raise ValueError(f"edge normalisation is built for the DARTS cell space, got "
                             f"{type(base).__name__}")
        self.base = base

    def init_arch(self, key: Any) -> dict:
        k_ops, k_edges = jax.random.split(key)
        alphas = dict(self.base.init_arch(k_ops))
        keys = jax.random.split(k_edges, len(alphas))
        for k, cell in zip(keys, sorted(alphas)):
            alphas[cell + relax.EDGES_SUFFIX] = self.base.init_scale * jax.random.normal(
                k, (self.base.num_edges,))
        return alphas

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (copy, unpickling): no recursion through base
            raise AttributeError(name)
        return getattr(self.base, name)


def pcdarts(model: nn.Module, *, space: Any = None,
            base_relax: relax.Relaxation | None = None,
            **darts_settings: Any) -> BilevelStrategy:
    """The PC-DARTS strategy for `model` (its `partial_channels` is K; 1 leaves only the
    edge normalisation); `darts_settings` are `darts`' keywords (estimator, schedules,
    optimizers, warm-up). `base_relax`: the op relaxation under the edge weights
    (default softmax, as PC-DARTS)."""
    if space is None:
        space = DartsSpace(primitives=tuple(model.primitives), steps=model.steps,
                           multiplier=model.multiplier)
    space = EdgeNormalizedSpace(space)
    rel = relax.edge_normalized_relaxation(base_relax or relax.softmax_relaxation(),
                                           node_groups(space.steps))
    return darts(model, space=space, relax=rel, **darts_settings)
