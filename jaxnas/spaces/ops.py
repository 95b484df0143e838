"""The DARTS candidate operations as flax.linen Modules (NHWC), and the OPS table."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnas.spaces.genotypes import OP_NAMES, PRIMITIVES

__all__ = [
    "PRIMITIVES", "OP_NAMES", "OPS", "Zero", "Identity", "Pool3x3", "MaxPool3x3",
    "AvgPool3x3", "ConvOp", "ReLUConvBN", "DilConv", "SepConv", "FactorizedReduce",
    "Conv7x1_1x7",
    "depthwise_conv", "max_pool_3x3", "max_pool_3x3_reduce_window", "avg_pool_3x3",
    "batch_norm", "BatchNorm",
    "torch_conv_init",
]

Padding = int | tuple[int, int]


def torch_conv_init() -> nn.initializers.Initializer:
    """PyTorch's default conv/linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Works for HWIO conv kernels (fan_in = kh * kw * in_per_group) and (in, out) dense
    kernels.
    """
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class BatchNorm(nn.Module):
    """PyTorch's `BatchNorm2d` over the channels (last axis) of x.

    The variables of `flax.linen.BatchNorm` (params `scale`, `bias` when affine;
    batch_stats `mean`, `var`), so weights load by the same names; unlike it, the
    running variance averages the *unbiased* batch variance (n / (n - 1)), as PyTorch
    does, so eval-mode outputs match a PyTorch network trained in step.
    """

    use_running_average: bool
    affine: bool = True
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            if not self.is_initializing():
                n = x.size // c
                unbiased = jax.lax.stop_gradient(var) * (n / (n - 1) if n > 1 else 1.0)
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
                ra_var.value = m * ra_var.value + (1 - m) * unbiased
        y = (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var.astype(x.dtype) + self.epsilon)
        if self.affine:
            scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
            bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
            y = y * scale.astype(x.dtype) + bias.astype(x.dtype)
        return y


def batch_norm(train: bool, affine: bool, name: str | None = None) -> BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 == flax 0.9, eps 1e-5)."""
    return BatchNorm(use_running_average=not train, affine=affine, name=name)


def _pad_pair(padding: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric PyTorch-style padding (int or (ph, pw)) as lax padding pairs."""
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return ((ph, ph), (pw, pw))


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int,
                   padding: Padding) -> jax.Array:
    """Depthwise (groups = C) 2-D convolution of NHWC `x` with kernel (kh, kw, 1, C).

    `padding` is symmetric zero padding as in PyTorch (int or (ph, pw)). This is the
    single place depthwise convolutions are computed in the discrete ops. The slice
    form the fused supernet uses on the CPU is not used here: one custom-VJP slice sum
    per depthwise layer made the loop supernet's compile run out of memory
    (benchmarks/results/2026-12-02-family/notes.md).
    """
    return jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=(stride, stride),
        padding=_pad_pair(padding), rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    """3x3 max pool, padding 1 with -inf (padded cells never win), NHWC."""
    return max_pool_3x3_reduce_window(x, stride)


def max_pool_3x3_reduce_window(x: jax.Array, stride: int) -> jax.Array:
    """`max_pool_3x3` as one `lax.reduce_window` (autodiff: select-and-scatter); the
    fused supernet's CPU alternative is `supernet.kernels.max_pool_3x3`."""
    # A Python-scalar init lets JAX recognise the differentiable reduce_window_max
    # primitive; an array init falls back to a generic reduce_window without a VJP.
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1),
        (1, stride, stride, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))


def avg_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    """3x3 average pool, padding 1, count_include_pad=False (padded cells excluded)."""
    window, strides = (1, 3, 3, 1), (1, stride, stride, 1)
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pads)
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pads)
    return total / count


def _conv(features: int, kernel: tuple[int, int], strides: tuple[int, int] = (1, 1),
          padding: str | tuple = "VALID", name: str | None = None) -> nn.Conv:
    """A bias-free convolution with PyTorch's default init: every conv of these ops."""
    return nn.Conv(features, kernel, strides=strides, padding=padding, use_bias=False,
                   kernel_init=torch_conv_init(), name=name)


def _check_channels(module: str, x: jax.Array, c_in: int) -> None:
    if x.shape[-1] != c_in:
        raise ValueError(f"{module}: expected {c_in} input channels, got {x.shape[-1]}")


class Zero(nn.Module):
    """The `none` op: zeros, spatially subsampled x[:, ::s, ::s] when strided."""

    stride: int

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])


class Identity(nn.Module):
    """The stride-1 `skip_connect` op."""

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return x


class Pool3x3(nn.Module):
    """`max_pool_3x3` or `avg_pool_3x3` (`mode` "max" or "avg") as a module; no
    BatchNorm (the search supernet adds one)."""

    stride: int
    mode: str = "max"

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pool = {"max": max_pool_3x3, "avg": avg_pool_3x3}[self.mode]
        return pool(x, self.stride)


def MaxPool3x3(stride: int, name: str | None = None) -> Pool3x3:  # noqa: N802
    return Pool3x3(stride, "max", name=name)


def AvgPool3x3(stride: int, name: str | None = None) -> Pool3x3:  # noqa: N802
    return Pool3x3(stride, "avg", name=name)


class ConvOp(nn.Module):
    """The fields of the convolution ops, in PyTorch DARTS' argument order."""

    C_in: int
    C_out: int
    kernel_size: int
    stride: int
    padding: int
    affine: bool = True


class ReLUConvBN(ConvOp):
    """ReLU, conv (no bias), BatchNorm."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_channels("ReLUConvBN", x, self.C_in)
        k, s = self.kernel_size, self.stride
        x = _conv(self.C_out, (k, k), (s, s), _pad_pair(self.padding), "conv")(nn.relu(x))
        return batch_norm(train, self.affine, name="bn")(x)


class DilConv(ConvOp):
    """ReLU, depthwise conv (dilated, strided), pointwise 1x1 conv, BatchNorm."""

    dilation: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_channels("DilConv", x, self.C_in)
        k = self.kernel_size
        dw = self.param("depthwise", torch_conv_init(), (k, k, 1, self.C_in))
        x = depthwise_conv(nn.relu(x), dw, self.stride, self.dilation, self.padding)
        x = _conv(self.C_out, (1, 1), name="pointwise")(x)
        return batch_norm(train, self.affine, name="bn")(x)


class SepConv(ConvOp):
    """Two dilation-1 DilConv blocks: C_in -> C_in with the stride, C_in -> C_out."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        k, p = self.kernel_size, self.padding
        x = DilConv(self.C_in, self.C_in, k, self.stride, p, self.affine,
                    name="block1")(x, train)
        return DilConv(self.C_in, self.C_out, k, 1, p, self.affine,
                       name="block2")(x, train)


class FactorizedReduce(nn.Module):
    """ReLU, two offset 1x1 stride-2 convs (C_out // 2 channels each), concat, BN.

    The second conv reads x[:, 1:, 1:]; for odd H or W its output is zero-padded at the
    end to the first conv's ceil(H / 2) x ceil(W / 2) (PyTorch only supports even H, W,
    where both give H / 2). An odd C_out gives the second conv the extra channel.
    """

    C_in: int
    C_out: int
    affine: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_channels("FactorizedReduce", x, self.C_in)
        half = self.C_out // 2
        x = nn.relu(x)
        a = _conv(half, (1, 1), (2, 2), name="conv_1")(x)
        b = _conv(self.C_out - half, (1, 1), (2, 2), name="conv_2")(x[:, 1:, 1:, :])
        b = jnp.pad(b, ((0, 0), (0, a.shape[1] - b.shape[1]),
                        (0, a.shape[2] - b.shape[2]), (0, 0)))
        return batch_norm(train, self.affine, name="bn")(jnp.concatenate([a, b], -1))


class Conv7x1_1x7(nn.Module):
    """`conv_7x1_1x7`: ReLU, conv (1, 7) stride (1, s), conv (7, 1) stride (s, 1), BN.
    """

    C: int
    stride: int
    affine: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_channels("Conv7x1_1x7", x, self.C)
        s = self.stride
        x = _conv(self.C, (1, 7), (1, s), ((0, 0), (3, 3)), "conv_1x7")(nn.relu(x))
        x = _conv(self.C, (7, 1), (s, 1), ((3, 3), (0, 0)), "conv_7x1")(x)
        return batch_norm(train, self.affine, name="bn")(x)


def _skip(C: int, stride: int, affine: bool, name: str | None = None) -> nn.Module:
    if stride == 1:
        return Identity(name=name)
    return FactorizedReduce(C, C, affine, name=name)


OpFactory = Callable[..., nn.Module]

# OPS[name](C, stride, affine) -> module called as module(x, train); an optional
# `name=` keyword names the submodule when built inside a parent module.
OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine, name=None: Zero(stride, name=name),
    "max_pool_3x3": lambda C, stride, affine, name=None: MaxPool3x3(stride, name=name),
    "avg_pool_3x3": lambda C, stride, affine, name=None: AvgPool3x3(stride, name=name),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda C, stride, affine, name=None: SepConv(
        C, C, 3, stride, 1, affine, name=name),
    "sep_conv_5x5": lambda C, stride, affine, name=None: SepConv(
        C, C, 5, stride, 2, affine, name=name),
    "sep_conv_7x7": lambda C, stride, affine, name=None: SepConv(
        C, C, 7, stride, 3, affine, name=name),
    "dil_conv_3x3": lambda C, stride, affine, name=None: DilConv(
        C, C, 3, stride, 2, affine, dilation=2, name=name),
    "dil_conv_5x5": lambda C, stride, affine, name=None: DilConv(
        C, C, 5, stride, 4, affine, dilation=2, name=name),
    "conv_7x1_1x7": lambda C, stride, affine, name=None: Conv7x1_1x7(
        C, stride, affine, name=name),
}

if set(OPS) != set(OP_NAMES):  # one list of names, owned by genotypes (no flax)
    raise ImportError(f"OPS {sorted(OPS)} != genotypes.OP_NAMES {sorted(OP_NAMES)}")
