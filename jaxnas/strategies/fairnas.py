"""FairNAS strict-fairness path sampling (Chu et al. 2019, arXiv:1907.01845).

Strict fairness: in every supernet step, each candidate choice of every layer is
activated (and trained) exactly once.  With ``m = num_choices`` choices per layer, one
step samples ``m`` single paths whose choices in each layer form a permutation of
``range(m)``; the gradients of the ``m`` paths are accumulated and applied in a single
optimizer update.  `strict_fair_paths` draws the paths and `accumulate_fair_grads`
performs the accumulation.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxnas.types import Array, PyTree


@functools.partial(jax.jit, static_argnames=("num_layers", "num_choices"))
def strict_fair_paths(key: Array, num_layers: int, num_choices: int) -> Array:
    """Sample the ``num_choices`` paths of one strictly fair FairNAS step.

    Args:
      key: a PRNG key.
      num_layers: number of searchable layers ``L`` (static).
      num_choices: number of candidate choices per layer ``m`` (static).

    Returns:
      int32[m, L]; row ``i`` is the ``i``-th path (one choice index per layer).  Every
      column is an independent uniformly random permutation of ``range(m)``, so every
      choice of every layer appears in exactly one path.
    """
    if num_layers < 1 or num_choices < 1:
        raise ValueError(
            f"need num_layers >= 1 and num_choices >= 1, got {num_layers}, "
            f"{num_choices}")
    # shuffle every column of the [m, L] table of choice indices independently
    table = jnp.broadcast_to(jnp.arange(num_choices, dtype=jnp.int32)[:, None],
                             (num_choices, num_layers))
    return jax.random.permutation(key, table, axis=0, independent=True)


def accumulate_fair_grads(loss_fn: Callable[..., Array], params: PyTree,
                          paths: Array, *args: Any) -> tuple[Array, PyTree]:
    """Gradients of ``loss_fn`` summed over the paths of one fair step.

    FairNAS back-propagates each of the ``m`` paths in turn, accumulating the
    gradients, and then applies one parameter update.  The paths run sequentially in
    a `jax.lax.scan`, so peak activation memory is that of a single path.

    Args:
      loss_fn: ``loss_fn(params, path, *args) -> scalar`` for one path
        (``path``: int32[L]).
      params: supernet parameters (a pytree).
      paths: int32[m, L], e.g. from `strict_fair_paths`.
      *args: extra arguments passed unchanged to every call (e.g. the batch).

    Returns:
      ``(losses, grads)``: float32[m] per-path losses and the summed gradient pytree.
    """
    grad_fn = jax.value_and_grad(loss_fn)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

    def body(acc: PyTree, path: Array) -> tuple[PyTree, Array]:
        loss, grads = grad_fn(params, path, *args)
        return jax.tree_util.tree_map(jnp.add, acc, grads), loss

    grads, losses = jax.lax.scan(body, zeros, paths)
    return losses, grads
