"""The discrete NAS-Bench-201 network (xautodl's ``TinyNetwork``) of one cell, in flax.

    stem: conv3x3 (no bias) - BN
    stage 1: N cells at C;  ResNet basic block C -> 2C (stride 2)
    stage 2: N cells at 2C; ResNet basic block 2C -> 4C (stride 2)
    stage 3: N cells at 4C
    BN - ReLU - global average pool - linear

A cell (`InferCell`) has 4 nodes: node ``i`` sums the ops of its edges from every
earlier node (`jaxnas.spaces.nb201.EDGES`) and the cell outputs node 3.  Every cell
edge maps C -> C with stride 1: ``none`` is zeros, ``skip_connect`` the identity,
``nor_conv_kxk`` ReLU - conv (no bias) - BN, ``avg_pool_3x3`` a 3x3 average (padding
excluded).  The basic block is ReLU-conv3x3(stride 2)-BN, ReLU-conv3x3-BN plus a
shortcut of 2x2 average pooling and a 1x1 conv.  BatchNorm is affine with running
statistics (PyTorch's defaults); the genotype is a static field, so each cell builds
only its chosen ops.  NHWC; height and width must be divisible by 4.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnas.spaces import nb201
from jaxnas.spaces.nb201 import NB201Genotype
from jaxnas.spaces.ops import ReLUConvBN, avg_pool_3x3, batch_norm, torch_conv_init

_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class InferCell(nn.Module):
    """One NB201 cell of width ``C`` (input and output ``C`` channels)."""

    genotype: NB201Genotype
    C: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.shape[-1] != self.C:
            raise ValueError(f"InferCell: expected {self.C} channels, got "
                             f"{x.shape[-1]}")
        nodes = [x]
        edges = iter(zip(nb201.EDGES, self.genotype.names))
        for i in range(1, nb201.NUM_NODES):
            total = None
            for _ in range(i):
                (node, j), name = next(edges)
                h = edge_op(name, nodes[j], self.C, train, f"edge{node}_{j}")
                total = h if total is None else total + h
            nodes.append(total)
        return nodes[-1]


def edge_op(name: str, x: jax.Array, C: int, train: bool,
            module_name: str) -> jax.Array:
    """One cell edge (C -> C, stride 1); only the conv ops create parameters."""
    if name == "none":
        return jnp.zeros_like(x)
    if name == "skip_connect":
        return x
    if name == "avg_pool_3x3":
        return avg_pool_3x3(x, 1)
    k = _KERNEL[name]
    return ReLUConvBN(C, C, k, 1, k // 2, True, name=module_name)(x, train)


class ResNetBasicblock(nn.Module):
    """The stride-2 reduction block between stages (``C_in -> C_out``)."""

    C_in: int
    C_out: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"ResNetBasicblock: stride 2 needs an even height and "
                             f"width, got {x.shape[1]}x{x.shape[2]}")
        h = ReLUConvBN(self.C_in, self.C_out, 3, 2, 1, True, name="conv_a")(x, train)
        h = ReLUConvBN(self.C_out, self.C_out, 3, 1, 1, True, name="conv_b")(h, train)
        r = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        r = nn.Conv(self.C_out, (1, 1), use_bias=False, kernel_init=torch_conv_init(),
                    name="downsample")(r)
        return r + h


class TinyNetwork(nn.Module):
    """NB201's network of one cell: ``C`` initial channels, ``N`` cells per stage.

    ``apply(variables, images, train)`` returns the logits; training needs
    ``mutable=["batch_stats"]``.
    """

    C: int
    N: int
    genotype: NB201Genotype
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        g = nb201.NB201Space().validate(self.genotype)
        c = self.C
        x = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=torch_conv_init(), name="stem_conv")(x)
        x = batch_norm(train, True, name="stem_bn")(x)
        index = 0  # xautodl numbers the cells and the two blocks in one list
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage:
                x = ResNetBasicblock(width // 2, width, name=f"cell{index}")(x, train)
                index += 1
            for _ in range(self.N):
                x = InferCell(g, width, name=f"cell{index}")(x, train)
                index += 1
        x = nn.relu(batch_norm(train, True, name="lastact_bn")(x))
        x = x.mean(axis=(1, 2))
        bound = 1.0 / math.sqrt(x.shape[-1])  # PyTorch's nn.Linear bias init

        def bias_init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        return nn.Dense(self.num_classes, kernel_init=torch_conv_init(),
                        bias_init=bias_init, name="classifier")(x)
