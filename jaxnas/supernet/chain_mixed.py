"""The chain supernet with soft op weights: each searchable layer is the weighted sum
of its six candidate blocks (a DARTS mixed op over inverted-residual blocks), so the
bilevel family searches the chain space (`config.model.space = "chain"`).

``ChainMixedSupernet.apply(variables, x, weights f32[L, K], train)``: layer ``l`` is
``x + sum_k weights[l, k] block_k(x)`` when it has a residual connection (the
shortcut outside the mixed op, as ProxylessNAS' mixed MBConv layer), else
``sum_k weights[l, k] block_k(x)``.  The parameters are `ChainSupernet`'s, in the
same tree (`jaxnas.supernet.chain.stacked_variables`: padded 7x7, expansion 6,
masks per choice), so one-hot weights compute exactly that supernet at that path
and variables move between the two.  All six blocks run in every step (one `vmap`
over the stacked choices, each at the padded size) and each updates its own
BatchNorm statistics, as every op of a DARTS mixed op does.

``weights`` may also be ``{"weights": f32[L, K], "paths": int32[L, M]}``
(ProxylessNAS' two sampled paths, `jaxnas.relax.two_path_relaxation`): layer ``l`` then
runs only the blocks ``paths[l]`` (their parameters gathered from the stack, one `vmap`
over M), ``sum_m weights[l, paths[l, m]] block(x)``, and only their statistics move.
That is the all-blocks layer in value and in the gradients of those columns whenever the
weights are 0 outside ``paths`` (the other columns are not read).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnas.spaces import chain as space_lib
from jaxnas.spaces.chain import CHOICE_NAMES, MAX_KERNEL
from jaxnas.supernet import chain as chain_lib
from jaxnas.supernet.chain_kernels import Head, Stem, check_input, inverted_residual
from jaxnas.types import Array


class MixedChoiceLayer(nn.Module):
    """One searchable layer: ``sum_k w_k block_k(x)`` over the stacked candidates."""

    spec: space_lib.LayerSpec
    impl: str = "auto"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, weights: Array, train: bool,
                 paths: Array | None = None) -> Array:
        spec = self.spec
        p, stat_vars = chain_lib.stacked_variables(self, spec)
        stats = {n: v.value for n, v in stat_vars.items()}
        hidden_mask, tap_mask = (jnp.asarray(m) for m in chain_lib.masks(spec))
        block = self._block(x, train)
        if paths is not None and not self.is_initializing():
            return self._paths(x, block, weights, train, paths, p, stat_vars, stats,
                               hidden_mask, tap_mask)
        ys, new = jax.vmap(block)(p, stats, hidden_mask, tap_mask)
        if train and not self.is_initializing():
            for n, var in stat_vars.items():
                # padded hidden channels keep their (unused) statistics
                keep = n.startswith(("bn1", "bn2"))
                var.value = (jnp.where(hidden_mask > 0, new[n], stats[n]) if keep
                             else new[n])
        y = jnp.einsum("k,k...->...", weights.astype(ys.dtype), ys)
        return x + y if spec.residual else y

    def _block(self, x: Array, train: bool):
        """One candidate block on `x`, given its slice of the stacked variables."""
        def block(p_k, stats_k, hidden_k, taps_k):
            return inverted_residual(
                x, p_k, stats_k, kernel=MAX_KERNEL, stride=self.spec.stride,
                residual=False, train=train, momentum=self.bn_momentum, impl=self.impl,
                hidden_mask=hidden_k, tap_mask=taps_k)
        return block

    def _paths(self, x, block, weights, train, paths, p, stat_vars, stats, hidden_mask,
               tap_mask):
        """Only the blocks `paths` run: their slices of the stacked variables."""
        spec = self.spec
        take = lambda a: a[paths]  # noqa: E731  (gathers M of the K stacked blocks)
        hidden = take(hidden_mask)
        ys, new = jax.vmap(block)(jax.tree.map(take, p), jax.tree.map(take, stats),
                                  hidden, take(tap_mask))
        if train:
            for n, var in stat_vars.items():
                keep = n.startswith(("bn1", "bn2"))
                upd = jnp.where(hidden > 0, new[n], take(stats[n])) if keep else new[n]
                var.value = stats[n].at[paths].set(upd)
        y = jnp.einsum("m,m...->...", take(weights).astype(ys.dtype), ys)
        return x + y if spec.residual else y


class ChainMixedSupernet(nn.Module):
    """The chain supernet of soft op weights f32[L, K] (see the module docstring)."""

    space: space_lib.ChainSpace
    num_classes: int
    impl: str = "auto"
    bn_momentum: float = 0.9

    @property
    def primitives(self) -> tuple[str, ...]:
        """The op names of a layer's weights (for plots and records)."""
        return CHOICE_NAMES

    @nn.compact
    def __call__(self, x: Array, weights: Array | dict, train: bool = True) -> Array:
        check_input(self.space, x)
        paths = None
        if isinstance(weights, dict):
            weights, paths = weights["weights"], weights["paths"]
        expected = (self.space.num_layers, len(CHOICE_NAMES))
        if weights.shape != expected:
            raise ValueError(f"op weights have shape {weights.shape}, expected "
                             f"{expected} for this space")
        x = Stem(self.space, self.bn_momentum, name="stem")(x, train)
        for l, spec in enumerate(self.space.layers()):
            x = MixedChoiceLayer(spec, self.impl, self.bn_momentum,
                                 name=f"layer{l}")(
                x, weights[l], train, None if paths is None else paths[l])
        return Head(self.space, self.num_classes, self.bn_momentum, name="head")(
            x, train)
