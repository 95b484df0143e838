"""Hardware-aware objectives: per-op cost tables of the chain space and MnasNet's
latency-aware reward, as jittable fitness functions.

A table cost is ``fixed + sum_l table[l, a_l]`` (`table_cost`): exact for the
parameter count (`jaxnas.spaces.chain.param_table`) and for the multiply-accumulate
count of convolutions and dense layers (`chain_macs_table`; BatchNorm, ReLU6 and
pooling are not counted), and the usual additive model of latency.  MnasNet (Tan et
al. 2019) scores ``accuracy * (cost / target) ** w`` with ``w = -0.07`` for a soft
constraint (`mnasnet_reward`).  A budget that no architecture of the space meets is
refused before anything compiles (`check_budget`).  For the gradient-based family the
same table gives a differentiable expected cost under per-layer op probabilities
(`expected_cost`, ProxylessNAS' latency loss).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jaxnas.spaces import chain as space_lib
from jaxnas.types import Array

MNASNET_W = -0.07  # Tan et al. 2019: alpha = beta = -0.07 (soft latency constraint)


def chain_macs_table(space: space_lib.ChainSpace, num_classes: int,
                     image_size: int) -> tuple[int, np.ndarray]:
    """``(fixed, table int64[L, K])``: multiply-accumulates of one image.

    Stem ``Ho Wo 9 C_in C_stem``; a block with hidden width ``h = e C_in``: expand
    ``H W C_in h`` (at its input size), depthwise ``Ho Wo k^2 h``, project
    ``Ho Wo h C_out`` (at its output size); head ``H W C_last C_head`` plus the
    classifier ``C_head * classes``.
    """
    size = (image_size - 1) // space.stem_stride + 1
    fixed = size * size * 9 * space.in_channels * space.stem_channels
    rows = []
    for spec in space.layers():
        out = (size - 1) // spec.stride + 1
        rows.append([size * size * spec.in_channels * c.expansion * spec.in_channels
                     + out * out * c.kernel ** 2 * c.expansion * spec.in_channels
                     + out * out * c.expansion * spec.in_channels * spec.out_channels
                     for c in space_lib.CHOICES])
        size = out
    fixed += size * size * space.widths[-1] * space.head_channels
    fixed += space.head_channels * num_classes
    return int(fixed), np.asarray(rows, np.int64)


def table_cost(fixed: float, table: np.ndarray) -> Callable[[Array], Array]:
    """``cost_fn(archs int32[N, L]) -> float32[N]``: ``fixed + sum_l table[l, a_l]``."""
    t = jnp.asarray(np.asarray(table, np.float64), jnp.float32)
    rows = jnp.arange(t.shape[0])

    def cost_fn(archs: Array) -> Array:
        return fixed + jnp.sum(t[rows, jnp.asarray(archs, jnp.int32)], axis=1)

    return cost_fn


def expected_cost(probs: Array, table: Array) -> Array:
    """``sum_l sum_i probs[..., l, i] * table[l, i]``: the expected table cost (less
    the fixed part) of a path drawn layer by layer from ``probs`` (ProxylessNAS, Cai et
    al. 2019).  Linear in ``probs`` (its gradient is ``table``), so it differentiates
    through any relaxation that produces the probabilities; leading axes of ``probs``
    (a batch of distributions) are kept.
    """
    t = jnp.asarray(table, jnp.result_type(probs, jnp.float32))
    if jnp.shape(probs)[-2:] != t.shape:
        raise ValueError(f"expected_cost: probs of shape {jnp.shape(probs)} do not end "
                         f"in the table's shape {t.shape} (layers, choices)")
    return jnp.sum(probs * t, axis=(-2, -1))


def check_budget(fixed: float, table: np.ndarray, budget: float,
                 name: str = "budget") -> None:
    """ValueError when even the cheapest architecture of the table exceeds ``budget``
    (before a search compiles), naming the cheapest cost."""
    cheapest = float(fixed + np.asarray(table).min(axis=1).sum())
    if cheapest > budget:
        raise ValueError(f"{name}={budget:g} is met by no architecture of this space: "
                         f"the cheapest costs {cheapest:g}")


def mnasnet_reward(accuracy: Array, cost: Array, target: float,
                   w: float = MNASNET_W) -> Array:
    """MnasNet's ``accuracy * (cost / target) ** w`` (w < 0 penalises cost)."""
    if target <= 0:
        raise ValueError(f"target must be positive, got {target}")
    return accuracy * (cost / target) ** w


def mnasnet_fitness(accuracy_fn: Callable[[Array], Array],
                    cost_fn: Callable[[Array], Array], target: float,
                    w: float = MNASNET_W) -> Callable[[Array], Array]:
    """A fitness ``int32[N, L] -> float32[N]`` (for evolution, REINFORCE) of the
    reward of ``accuracy_fn`` and ``cost_fn``."""
    if target <= 0:
        raise ValueError(f"target must be positive, got {target}")

    def fitness(archs: Array) -> Array:
        return mnasnet_reward(accuracy_fn(archs), cost_fn(archs), target, w)

    return fitness


def chain_tables(space: space_lib.ChainSpace, num_classes: int, image_size: int
                 ) -> dict[str, tuple[int, np.ndarray]]:
    """The chain space's per-op tables by name: ``params`` and ``macs``."""
    return {"params": space_lib.param_table(space, num_classes),
            "macs": chain_macs_table(space, num_classes, image_size)}


def describe_table(table: np.ndarray, names: Sequence[str] = space_lib.CHOICE_NAMES
                   ) -> list[dict[str, int]]:
    """Rows of a table as ``{choice name: cost}`` dicts (for JSON reports)."""
    return [{n: int(v) for n, v in zip(names, row)} for row in np.asarray(table)]
