"""FairNAS strict-fairness path sampling (Chu et al. 2019, arXiv:1907.01845).

Strict fairness: in every supernet step, each candidate choice of every layer is
activated (and trained) exactly once.  With ``m = num_choices`` choices per layer, one
step samples ``m`` single paths whose choices in each layer form a permutation of
``range(m)``; the gradients of the ``m`` paths are accumulated and applied in a single
optimizer update.  `strict_fair_paths` draws the paths and `accumulate_fair_grads`
performs the accumulation (the FairNAS strategy in `jaxnas.strategies.oneshot` uses both).
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


def accumulate_fair_grads(loss_fn: Callable[..., Any], params: PyTree, paths: Array,
                          *args: Any, has_aux: bool = False,
                          args_axes: Any = None, sequential: bool = False
                          ) -> tuple[Any, PyTree]:
    """Gradients of ``loss_fn`` summed over the paths of one fair step.

    FairNAS back-propagates each of the ``m`` paths, accumulating the gradients, and then
    applies one parameter update (the FairNAS strategy, `jaxnas.strategies.oneshot`, does
    this).  By default the ``m`` gradients come from one `jax.vmap` call, so that a
    ``path`` mesh axis can spread them over devices; ``sequential=True`` runs the paths
    one after the other in a `jax.lax.scan` instead, so that peak activation memory is
    that of a single path.

    Args:
      loss_fn: ``loss_fn(params, path, *args) -> scalar`` for one path (``path``:
        int32[L]), or ``-> (scalar, aux)`` with ``has_aux``.
      params: supernet parameters (a pytree).
      paths: int32[m, L], e.g. from `strict_fair_paths`.
      *args: further arguments of every call (e.g. BatchNorm statistics, the batch).
      args_axes: how each of ``args`` meets the paths, as `jax.vmap`'s ``in_axes``: None,
        the same value for every path; 0, a leading ``m`` axis, one slice per path (one
        batch per path); or a tuple of those, one per argument.

    Returns:
      ``(losses, grads)``: float32[m] per-path losses (with ``has_aux``: ``(losses,
      aux)``, aux stacked per path) and the gradient pytree summed over the paths.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
    axes = args_axes if isinstance(args_axes, tuple) else (args_axes,) * len(args)
    if not sequential:
        values, grads = jax.vmap(grad_fn, in_axes=(None, 0, *axes))(params, paths, *args)
        return values, jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)

    def body(acc: PyTree, xs: tuple[Array, tuple]) -> tuple[PyTree, Any]:
        path, sliced = xs
        call = [s if ax == 0 else a for a, s, ax in zip(args, sliced, axes)]
        value, grads = grad_fn(params, path, *call)
        return jax.tree.map(jnp.add, acc, grads), value

    per_path = tuple(a if ax == 0 else None for a, ax in zip(args, axes))
    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, values = jax.lax.scan(body, zeros, (paths, per_path))
    return values, grads
