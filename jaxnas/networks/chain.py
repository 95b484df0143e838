"""The discrete network of one chain-space path (what a searched path is retrained as).

Same stem and head parameter names as `jaxnas.supernet.chain.ChainSupernet`; layer
``l`` is a `Block` with the unpadded parameters of its chosen candidate, so that
`jaxnas.supernet.chain.extract_path_variables` can hand it a path's inherited weights.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from jaxnas.spaces import chain as space_lib
from jaxnas.spaces.chain import CHOICES
from jaxnas.supernet.chain_kernels import (Head, Stem, bn_variables, check_input,
                                           he_normal, inverted_residual)
from jaxnas.types import Array


class Block(nn.Module):
    """One fixed inverted-residual block of the discrete network (unpadded)."""

    spec: space_lib.LayerSpec
    choice: int
    impl: str = "auto"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        spec, c = self.spec, CHOICES[self.choice]
        h = c.expansion * spec.in_channels
        p = {
            "expand": self.param("expand", lambda k, s: he_normal(k, s, s[0]),
                                 (spec.in_channels, h)),
            "dw": self.param("dw", lambda k, s: he_normal(k, s, c.kernel ** 2),
                             (c.kernel ** 2, h)),
            "project": self.param("project", lambda k, s: he_normal(k, s, s[0]),
                                  (h, spec.out_channels)),
        }
        bn, stat_vars = bn_variables(self, spec, {"bn1": h, "bn2": h,
                                                  "bn3": spec.out_channels})
        p.update(bn)
        y, new = inverted_residual(
            x, p, {n: v.value for n, v in stat_vars.items()}, kernel=c.kernel,
            stride=spec.stride, residual=spec.residual, train=train,
            momentum=self.bn_momentum, impl=self.impl)
        if train and not self.is_initializing():
            for n, var in stat_vars.items():
                var.value = new[n]
        return y


class ChainNet(nn.Module):
    """The discrete network of one path (what a path is retrained as).

    ``choices`` is the path (a tuple of choice indices).  Same stem/head parameter
    names as `ChainSupernet`; layer ``l`` is a `Block` with the unpadded parameters of
    its chosen candidate.
    """

    space: space_lib.ChainSpace
    choices: tuple[int, ...]
    num_classes: int
    impl: str = "auto"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        check_input(self.space, x)
        path = space_lib.check_path(self.space, self.choices)
        x = Stem(self.space, self.bn_momentum, name="stem")(x, train)
        for l, (spec, choice) in enumerate(zip(self.space.layers(), path)):
            x = Block(spec, choice, self.impl, self.bn_momentum, name=f"layer{l}")(
                x, train)
        return Head(self.space, self.num_classes, self.bn_momentum, name="head")(
            x, train)


def build_path_network(space: space_lib.ChainSpace, path: Sequence[int],
                       num_classes: int, *, impl: str = "auto",
                       bn_momentum: float = 0.9) -> ChainNet:
    """The discrete single-path network of ``path`` (to retrain from scratch)."""
    return ChainNet(space, space_lib.check_path(space, path), num_classes, impl=impl,
                    bn_momentum=bn_momentum)
