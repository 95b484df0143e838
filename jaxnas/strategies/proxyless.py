"""ProxylessNAS (Cai et al. 2019) over the bilevel core: binarised paths and the paper's
gradient estimator, with an optional expected-cost term.

- Each half-step samples one op per edge from Categorical(softmax(alpha)) and feeds its
  one-hot gate (`relax.binary_gates`): the weight step trains the sampled path, the
  architecture step differentiates the validation loss through the gates with the paper's
  estimator dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i). It is the gradient of the
  first-order expansion of E_g[L(g)] around the sampled gate; it equals the gradient of
  E_g[L(g)] when L is linear in each edge's gate (tests/test_proxyless.py: brute force).
- Cost, paths="all": the supernet is fed one-hot op weights, so every candidate is
  still computed and all but one multiplied by 0: a step costs what a DARTS step costs.
  That is also what the one-path estimator needs: dL/dg_j = <dL/dy, op_j(x)> for every j.
- paths="two", the paper's memory trick (`relax.two_path_relaxation`): each half-step
  draws two distinct ops per edge from softmax(alpha), one of them active with
  probability q = softmax(alpha_pair); the estimator runs over the pair only (q in
  place of p, the other alphas get no gradient from the loss) and, after each
  architecture update, the pair's alphas are shifted so that their logsumexp is
  unchanged (`relax.rescale_pair`). The supernet computes only the two ops of each edge
  (the DARTS cell supernet's loop mixed op, the chain supernet). In the weight half the
  inactive op of the pair also runs (gate 0: no gradient, but its BatchNorm statistics
  move), where the paper runs the active op alone.
- Resource term: cost_weight * sum over edges of sum_k softmax(alpha)_k cost_k added to
  the architecture objective (`hardware.with_expected_cost`): the expected cost of the
  cell's edges. `op_param_table` gives per-op parameter counts of the discrete DARTS ops;
  a measured latency table of the same shape can be passed instead.
- Evaluation and derivation: softmax of the alphas and DARTS' top-2 rule.

Runs on the DARTS cell supernet and on the chain space (`jaxnas.supernet.chain_mixed`,
with a measured latency table through `config.hardware`).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import hardware, relax
from jaxnas.spaces import cells
from jaxnas.spaces import ops as ops_lib
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts


@functools.lru_cache(maxsize=None)  # a table asks for few distinct (op, width, stride)
def op_params(name: str, channels: int, stride: int) -> int:
    """Parameters of one discrete DARTS op (affine BatchNorm, as in `NetworkCIFAR`)."""
    op = ops_lib.OPS[name](channels, stride, True)
    x = jax.ShapeDtypeStruct((1, 8, 8, channels), jnp.float32)
    shapes = jax.eval_shape(lambda: op.init(jax.random.key(0), jnp.zeros(x.shape), False))
    return int(sum(np.prod(v.shape) for v in jax.tree.leaves(shapes.get("params", {}))))


def op_param_table(primitives: Sequence[str], channels: int, steps: int) -> dict:
    """{"normal": f32[E, K], "reduce": f32[E, K]}: each op's parameter count on each edge,
    the normal cell at `channels`, the reduction cell at 2 * channels (the first of each
    in the DARTS network) with stride 2 on the edges from the two cell inputs."""
    e = cells.num_edges(steps)
    out = {}
    for cell, c in (("normal", channels), ("reduce", 2 * channels)):
        table = np.zeros((e, len(primitives)), np.float32)
        for node in range(steps):
            for src in range(node + 2):
                stride = 2 if cell == "reduce" and src < 2 else 1
                table[cells.edge_index(src, node)] = [op_params(p, c, stride)
                                                      for p in primitives]
        out[cell] = table
    return out


PATHS = ("all", "two")  # one sampled gate over every op's output; the paper's two paths


def proxyless(model: nn.Module, *, cost_weight: float = 0.0, cost_table: Any = None,
              paths: str = "all", **darts_settings: Any) -> BilevelStrategy:
    """The ProxylessNAS strategy; `darts_settings` are `darts`' keywords (the estimator
    applies to the gated loss; first_order is the paper's). With cost_weight > 0 the
    resource term uses `cost_table` (default: `op_param_table` of the model, in millions
    of parameters). `paths`: "all" (one-path gates, every op computed) or "two" (the
    paper's two sampled paths; see the module docstring)."""
    if not cost_weight >= 0:
        raise ValueError(f"cost_weight={cost_weight!r}: expected a number >= 0")
    if paths not in PATHS:
        raise ValueError(f"paths={paths!r}: expected one of {PATHS}")
    base = (relax.binary_gate_relaxation() if paths == "all"
            else relax.two_path_relaxation())
    if cost_weight:
        if cost_table is None:
            cost_table = jax.tree.map(
                lambda t: t / 1e6,
                op_param_table(tuple(model.primitives), model.channels, model.steps))
        base = hardware.with_expected_cost(base, cost_table, cost_weight)
    return darts(model, relax=base, **darts_settings)
