"""The DARTS search supernet driven by ENAS cell paths (`jaxnas.spaces.enas_cells`):
the path is an input, turned into op weights inside the traced call, so one compiled
program serves every sampled cell and a whole batch of paths vmaps."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxnas.spaces.enas_cells import EnasCellSpace
from jaxnas.supernet.darts import DartsSupernet


class EnasCellSupernet(nn.Module):
    """`supernet(x, space.arch_weights(path), train)`: the shared weights of every cell
    ENAS can sample (the supernet's `steps` and primitives must match the space's)."""

    supernet: DartsSupernet
    space: EnasCellSpace

    def setup(self) -> None:
        if (self.space.steps, self.space.primitives) != (
                self.supernet.steps, tuple(self.supernet.primitives)):
            raise ValueError(f"ENAS cell space (steps={self.space.steps}, "
                             f"{self.space.primitives}) does not match the supernet "
                             f"(steps={self.supernet.steps}, {self.supernet.primitives})")

    def __call__(self, x: jax.Array, path: jax.Array, train: bool = True) -> jax.Array:
        return self.supernet(x, self.space.arch_weights(path, x.dtype), train)
