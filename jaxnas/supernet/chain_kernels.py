"""Numerics and layers the chain supernet and its discrete network share.

Inverted-residual blocks (`inverted_residual`) over explicit parameter and statistics
dicts, their BatchNorm (`batch_norm`, biased variance, flax momentum convention), the
depthwise convolution in several formulations (`depthwise`), and the stem, head and
BatchNorm layers both networks build identically.

On the CPU the padding of a kernel is free for small feature maps: the "toeplitz"
depthwise form costs the same for any kernel size, and for a 7x7 kernel on an 8x8 map
it is ~10x faster forward+backward than k*k shifted slices.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces import chain as space_lib
from jaxnas.supernet import kernels
from jaxnas.types import Array

EPS = 1e-5

def as_indices(path: Array) -> Array:
    """int32[L] choice indices from int indices or a one-hot float[L, K]."""
    path = jnp.asarray(path)
    if path.ndim == 2:
        return jnp.argmax(path, axis=-1).astype(jnp.int32)
    if path.ndim != 1:
        raise ValueError(f"a path is int32[L] or one-hot float[L, K], got shape "
                         f"{path.shape}")
    return path.astype(jnp.int32)


def relu6(x: Array) -> Array:
    return jnp.clip(x, 0.0, 6.0)


def batch_norm(x: Array, scale: Array, bias: Array, mean: Array, var: Array, *,
               train: bool, momentum: float) -> tuple[Array, Array, Array]:
    """BatchNorm over N, H, W of NHWC ``x``; returns ``(y, new_mean, new_var)``.

    In training the batch statistics normalise and the running ones move towards
    them; otherwise the running statistics normalise and are returned unchanged.
    """
    if train:
        axes = tuple(range(x.ndim - 1))
        bmean = jnp.mean(x, axis=axes)
        bvar = jnp.mean(jnp.square(x - bmean), axis=axes)
        new_mean = momentum * mean + (1.0 - momentum) * bmean
        new_var = momentum * var + (1.0 - momentum) * bvar
        use_mean, use_var = bmean, bvar
    else:
        new_mean, new_var, use_mean, use_var = mean, var, mean, var
    y = (x - use_mean) * jax.lax.rsqrt(use_var + EPS) * scale + bias
    return y, new_mean, new_var


IMPLS = ("auto", "slices", "taps", "toeplitz", "lax")
TOEPLITZ_MAX_PIXELS = 64  # "auto" uses the Toeplitz form up to 8x8 feature maps


@functools.lru_cache(maxsize=None)
def toeplitz_taps(h: int, w: int, kernel: int, stride: int) -> np.ndarray:
    """0/1 float32[Ho*Wo, H*W, k*k]: which input pixel each tap of each output reads.

    With it a depthwise conv is ``y[n, p, c] = sum_q x[n, q, c] M[c, p, q]``, ``M =
    einsum("pqt,tc->cpq", T, w)``: batched matrix products instead of k*k shifted
    slices (whose weight gradient is k*k slow reductions on the CPU).
    """
    p = kernel // 2
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((ho * wo, h * w, kernel * kernel), np.float32)
    for i in range(ho):
        for j in range(wo):
            for dy in range(kernel):
                for dx in range(kernel):
                    y, x = i * stride + dy - p, j * stride + dx - p
                    if 0 <= y < h and 0 <= x < w:
                        out[i * wo + j, y * w + x, dy * kernel + dx] = 1.0
    return out


@functools.lru_cache(maxsize=None)
def toeplitz_source(h: int, w: int, kernel: int, stride: int) -> np.ndarray:
    """int32[Ho*Wo, k*k]: the input pixel each tap of each output reads (-1: none)."""
    t = toeplitz_taps(h, w, kernel, stride)
    return np.where(t.any(axis=1), t.argmax(axis=1), -1).astype(np.int32)


def resolve_impl(impl: str, h: int, w: int) -> str:
    """'auto' -> 'lax' off the CPU; on the CPU 'toeplitz' for maps of at most
    `TOEPLITZ_MAX_PIXELS` pixels, else 'slices'."""
    if impl not in IMPLS:
        raise ValueError(f"depthwise implementation {impl!r}: expected one of "
                         f"{', '.join(IMPLS)}")
    if impl != "auto":
        return impl
    if kernels.resolve_impl("auto") == "lax":
        return "lax"
    return "toeplitz" if h * w <= TOEPLITZ_MAX_PIXELS else "slices"


def depthwise(x: Array, weight: Array, kernel: int, stride: int,
              impl: str = "auto") -> Array:
    """Depthwise ``kernel`` x ``kernel`` conv, padding ``kernel // 2``.

    Args:
      x: float[N, H, W, C]; weight: float[kernel * kernel, C] (taps row-major).
      impl: "slices" (sum of shifted slices with a hand-written VJP,
        `kernels.depthwise_slices`), "taps" (the same sum differentiated by autodiff:
        slow weight gradient for large kernels), "toeplitz" (batched matmuls with a constant
        tap-placement tensor, `toeplitz_taps`: about 10x faster forward+backward
        than taps for a 7x7 kernel on an 8x8 map, quadratic in the map size),
        "lax" (grouped convolution: the GPU/TPU path) or "auto" (`resolve_impl`).
    """
    n, h, w, c = x.shape
    impl = resolve_impl(impl, h, w)
    p = kernel // 2
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    if impl == "lax":
        rhs = weight.reshape(kernel, kernel, 1, c)
        return jax.lax.conv_general_dilated(
            x, rhs, (stride, stride), [(p, p), (p, p)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    if impl == "toeplitz":
        # the 0/1 tensor is rebuilt from a small int table by one comparison, so that
        # no large constant enters the program (large constants slow compilation)
        source = jnp.asarray(toeplitz_source(h, w, kernel, stride))  # int32[P, T]
        taps = (source[:, None, :] == jnp.arange(h * w)[None, :, None]).astype(x.dtype)
        matrix = jnp.einsum("pqt,tc->cpq", taps, weight)
        y = jnp.einsum("nqc,cpq->npc", x.reshape(n, h * w, c), matrix)
        return y.reshape(n, ho, wo, c)
    if impl == "slices":
        return kernels.depthwise_slices(x, weight, kernel, 1, stride)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = None
    for t in range(kernel * kernel):
        dy, dx = divmod(t, kernel)
        view = xp[:, dy:dy + (ho - 1) * stride + 1:stride,
                  dx:dx + (wo - 1) * stride + 1:stride, :]
        term = view * weight[t]
        out = term if out is None else out + term
    return out


def inverted_residual(x: Array, p: dict, stats: dict, *, kernel: int, stride: int,
                      residual: bool, train: bool, momentum: float, impl: str,
                      hidden_mask: Optional[Array] = None,
                      tap_mask: Optional[Array] = None) -> tuple[Array, dict]:
    """One inverted-residual block; returns ``(y, new_stats)``.

    ``p`` holds ``expand`` [C_in, h], ``dw`` [k*k, h], ``project`` [h, C_out] and
    ``bn{1,2,3}_{scale,bias}``; ``stats`` holds ``bn{1,2,3}_{mean,var}``.  With
    ``hidden_mask`` (float[h]) hidden channels outside it are zeroed after each
    BatchNorm, and with ``tap_mask`` (float[k*k]) the kernel taps outside it are
    zeroed: the padded form of a smaller block (see the module docstring).
    """
    new = {}

    def bn(y: Array, i: int) -> Array:
        name = f"bn{i}"
        y, new[f"{name}_mean"], new[f"{name}_var"] = batch_norm(
            y, p[f"{name}_scale"], p[f"{name}_bias"], stats[f"{name}_mean"],
            stats[f"{name}_var"], train=train, momentum=momentum)
        return y

    def mask(y: Array) -> Array:
        return y if hidden_mask is None else y * hidden_mask

    dw = p["dw"] if tap_mask is None else p["dw"] * tap_mask[:, None]
    y = mask(relu6(bn(jnp.einsum("nhwc,cd->nhwd", x, p["expand"]), 1)))
    y = mask(relu6(bn(depthwise(y, dw, kernel, stride, impl), 2)))
    y = bn(jnp.einsum("nhwc,cd->nhwd", y, p["project"]), 3)
    return (x + y if residual else y), new


def he_normal(key: Array, shape: Sequence[int], fan_in: int) -> Array:
    return jax.random.normal(key, shape, jnp.float32) * np.sqrt(2.0 / fan_in)

def scale_init(spec: space_lib.LayerSpec, bn: str):
    """BatchNorm scale initializer: ones, but zeros for the last BatchNorm of a
    residual block, so that every residual block starts as the identity (Goyal et
    al. 2017).  In a supernet this matters: with all layers' choices random from
    the first step, a supernet started with ones sat at chance level for about 200
    SPOS steps on the digits, and one started with zeros learns at once."""
    if bn == "bn3" and spec.residual:
        return nn.initializers.zeros
    return nn.initializers.ones

def bn_variables(module: nn.Module, spec: space_lib.LayerSpec, widths: dict[str, int],
                 lead: tuple[int, ...] = ()) -> tuple[dict, dict]:
    """A block's BatchNorm parameters (``{bn}_scale``, ``{bn}_bias``) and running
    statistics variables (``{bn}_mean``, ``{bn}_var``) of shape ``lead + (width,)``,
    created in ``module`` (called inside its compact ``__call__``)."""
    p, stat_vars = {}, {}
    for name, width in widths.items():
        shape = lead + (width,)
        p[f"{name}_scale"] = module.param(f"{name}_scale", scale_init(spec, name), shape)
        p[f"{name}_bias"] = module.param(f"{name}_bias", nn.initializers.zeros, shape)
        stat_vars[f"{name}_mean"] = module.variable(
            "batch_stats", f"{name}_mean", jnp.zeros, shape, jnp.float32)
        stat_vars[f"{name}_var"] = module.variable(
            "batch_stats", f"{name}_var", jnp.ones, shape, jnp.float32)
    return p, stat_vars


class BatchNorm(nn.Module):
    """Plain BatchNorm over N, H, W (same numerics as the choice blocks)."""

    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        y, new_mean, new_var = batch_norm(x, scale, bias, mean.value, var.value,
                                          train=train, momentum=self.bn_momentum)
        if train and not self.is_initializing():
            mean.value, var.value = new_mean, new_var
        return y


class Stem(nn.Module):
    space: space_lib.ChainSpace
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        s = self.space
        w = self.param("kernel", lambda k, sh: he_normal(k, sh, 9 * sh[2]),
                       (3, 3, x.shape[-1], s.stem_channels))
        y = jax.lax.conv_general_dilated(
            x, w, (s.stem_stride, s.stem_stride), [(1, 1), (1, 1)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return relu6(BatchNorm(self.bn_momentum, name="bn")(y, train))


class Head(nn.Module):
    space: space_lib.ChainSpace
    num_classes: int
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        s = self.space
        w = self.param("kernel", lambda k, sh: he_normal(k, sh, sh[0]),
                       (x.shape[-1], s.head_channels))
        y = jnp.einsum("nhwc,cd->nhwd", x, w)
        y = relu6(BatchNorm(self.bn_momentum, name="bn")(y, train))
        return nn.Dense(self.num_classes, name="classifier")(jnp.mean(y, axis=(1, 2)))


def check_input(space: space_lib.ChainSpace, x: Array) -> None:
    if x.ndim != 4 or x.shape[-1] != space.in_channels:
        raise ValueError(f"expected NHWC images with {space.in_channels} channels, got "
                         f"shape {x.shape}")
