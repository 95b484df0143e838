"""The discrete DARTS evaluation network (NetworkCIFAR) and its parameter count."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnas.networks import param_count
from jaxnas.spaces import genotypes
from jaxnas.spaces.genotypes import Genotype
from jaxnas.spaces.ops import (OPS, FactorizedReduce, Identity, ReLUConvBN,
                               batch_norm, torch_conv_init)

DropProb = float | jax.Array


def drop_path(x: jax.Array, drop_prob: DropProb, key: jax.Array) -> jax.Array:
    """Drop whole samples of x (N, ...) with probability `drop_prob`, scaling the rest.

    As DARTS: x / keep_prob * Bernoulli(keep_prob) mask of shape (N, 1, 1, 1).
    """
    keep = 1.0 - jnp.asarray(drop_prob, x.dtype)
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x / keep * mask.astype(x.dtype)


def _static_zero(p: DropProb) -> bool:
    return isinstance(p, (int, float)) and p == 0


def _linear(x: jax.Array, features: int, name: str) -> jax.Array:
    """nn.Linear with PyTorch's default init (weight and bias U(+-1/sqrt(fan_in)))."""
    bound = 1.0 / math.sqrt(x.shape[-1])

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(features, kernel_init=torch_conv_init(), bias_init=bias_init,
                    name=name)(x)


class Cell(nn.Module):
    """A discrete DARTS cell: preprocess both inputs, 2 ops per node, concat nodes."""

    genotype: Genotype
    C: int
    reduction: bool
    reduction_prev: bool

    @nn.compact
    def __call__(self, s0: jax.Array, s1: jax.Array, train: bool = False,
                 drop_prob: DropProb = 0.0) -> jax.Array:
        c = self.C
        if self.reduction_prev:
            s0 = FactorizedReduce(s0.shape[-1], c, True, name="preprocess0")(s0, train)
        else:
            s0 = ReLUConvBN(s0.shape[-1], c, 1, 1, 0, True, name="preprocess0")(s0,
                                                                                 train)
        s1 = ReLUConvBN(s1.shape[-1], c, 1, 1, 0, True, name="preprocess1")(s1, train)
        if self.reduction:
            edges, concat = self.genotype.reduce, self.genotype.reduce_concat
        else:
            edges, concat = self.genotype.normal, self.genotype.normal_concat
        states = [s0, s1]
        for i in range(len(edges) // 2):
            node = []
            for e in (2 * i, 2 * i + 1):
                name, index = edges[e]
                stride = 2 if self.reduction and index < 2 else 1
                op = OPS[name](c, stride, True, name=f"op{e}")
                h = op(states[index], train)
                if train and not _static_zero(drop_prob) and not isinstance(op,
                                                                            Identity):
                    h = drop_path(h, drop_prob, self.make_rng("dropout"))
                node.append(h)
            states.append(node[0] + node[1])
        return jnp.concatenate([states[i] for i in concat], axis=-1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 maps after the second reduction cell.

    ReLU, 5x5 avg pool stride 3 (no padding), 1x1 conv C->128 + BN + ReLU, 2x2 conv
    128->768 + BN + ReLU, linear 768->num_classes. At 8x8 (32x32 images) this is the
    reference exactly. Other sizes, which the reference rejects: the pool window is
    clipped to the map, a map smaller than 2x2 is zero-padded at the end before the
    2x2 conv, and the 768 features are averaged over any remaining positions.
    """

    C: int
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.shape[-1] != self.C:
            raise ValueError(f"AuxiliaryHeadCIFAR: expected {self.C} channels, got "
                             f"{x.shape[-1]}")
        x = nn.relu(x)
        window = (min(5, x.shape[1]), min(5, x.shape[2]))
        x = nn.avg_pool(x, window, strides=(3, 3), padding="VALID")
        x = nn.Conv(128, (1, 1), use_bias=False, kernel_init=torch_conv_init(),
                    name="conv1")(x)
        x = nn.relu(batch_norm(train, True, name="bn1")(x))
        x = jnp.pad(x, ((0, 0), (0, max(0, 2 - x.shape[1])),
                        (0, max(0, 2 - x.shape[2])), (0, 0)))
        x = nn.Conv(768, (2, 2), padding="VALID", use_bias=False,
                    kernel_init=torch_conv_init(), name="conv2")(x)
        x = nn.relu(batch_norm(train, True, name="bn2")(x))
        return _linear(x.mean(axis=(1, 2)), self.num_classes, "classifier")


class NetworkCIFAR(nn.Module):
    """The DARTS CIFAR evaluation network built from a genotype (NHWC, any H x W).

    `apply(variables, images, train, drop_path_prob=None)` returns (logits, aux_logits);
    aux_logits is None unless `auxiliary` and `train`. Training needs
    `mutable=["batch_stats"]` and, when the drop-path probability may be non-zero, a
    'dropout' rng. `drop_path_prob` in the call (a float or a traced scalar, e.g. one
    annealed per epoch without recompiling) overrides the attribute.
    """

    C: int
    num_classes: int
    layers: int
    auxiliary: bool
    genotype: Genotype
    drop_path_prob: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 drop_path_prob: DropProb | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
        g = genotypes.validate(self.genotype)
        p = self.drop_path_prob if drop_path_prob is None else drop_path_prob
        c_curr = 3 * self.C  # stem multiplier 3
        s = nn.Conv(c_curr, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=torch_conv_init(), name="stem_conv")(x)
        s0 = s1 = batch_norm(train, True, name="stem_bn")(s)
        c_curr = self.C
        reduction_prev = False
        aux_at = 2 * self.layers // 3
        logits_aux = None
        for i in range(self.layers):
            reduction = i in (self.layers // 3, aux_at)
            if reduction:
                c_curr *= 2
            cell = Cell(g, c_curr, reduction, reduction_prev, name=f"cell{i}")
            s0, s1 = s1, cell(s0, s1, train, p)
            reduction_prev = reduction
            if i == aux_at and self.auxiliary and (train or self.is_initializing()):
                # Built at init even in eval mode, so its parameters always exist.
                aux = AuxiliaryHeadCIFAR(s1.shape[-1], self.num_classes,
                                         name="auxiliary_head")(s1, train)
                logits_aux = aux if train else None
        out = s1.mean(axis=(1, 2))
        return _linear(out, self.num_classes, "classifier"), logits_aux


def count_parameters(genotype: Genotype, channels: int, layers: int,
                     num_classes: int = 10, auxiliary: bool = False) -> int:
    """Entries of the `params` collection of NetworkCIFAR (BN scale/bias included,
    running statistics not), from shapes only (`jax.eval_shape`, no compute)."""
    model = NetworkCIFAR(channels, num_classes, layers, auxiliary,
                         genotypes.validate(genotype))
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    init = functools.partial(model.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), images)
    return param_count(shapes["params"])
