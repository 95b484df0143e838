"""Batched numeric kernels of the fused mixed op: stacked depthwise convs, BN, 1x1 convs.

Every kernel works on tensors with leading "stack" axes (edges, ops) in front of NHWC, so
that the candidates of many edges run as one computation. Depthwise convolutions are
backend dependent (see STACK-NOTES): XLA's grouped convolution is slow on the CPU, so
there we gather the shifted views ("taps") once and contract them with one einsum;
on GPU/TPU the grouped convolution is the fast path.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Taps = tuple[tuple[int, int], ...]


@functools.lru_cache(maxsize=None)
def conv_taps(kernel: int, dilation: int) -> Taps:
    """Offsets (dy, dx) read by a centred `kernel` x `kernel` conv with `dilation`."""
    r = (kernel // 2) * dilation
    return tuple((dy, dx) for dy in range(-r, r + 1, dilation)
                 for dx in range(-r, r + 1, dilation))


def resolve_impl(impl: str) -> str:
    """'auto' -> 'taps' on the CPU, 'lax' (grouped convolution) elsewhere."""
    if impl == "auto":
        return "taps" if jax.default_backend() == "cpu" else "lax"
    if impl not in ("taps", "lax"):
        raise ValueError(f"depthwise implementation {impl!r}: expected auto, taps or lax")
    return impl


def _shifted(xp: jax.Array, pad: int, dy: int, dx: int, out_hw: tuple[int, int],
             stride: int) -> jax.Array:
    """The view of padded `xp` (..., H+2p, W+2p, C) that tap (dy, dx) reads."""
    ho, wo = out_hw
    y0, x0 = pad + dy, pad + dx
    return xp[..., y0:y0 + (ho - 1) * stride + 1:stride, x0:x0 + (wo - 1) * stride + 1:stride, :]


def _out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    return ((h - 1) // stride + 1, (w - 1) // stride + 1)


def multi_depthwise(x: jax.Array, kernels: Sequence[jax.Array],
                    specs: Sequence[tuple[int, int]], stride: int,
                    impl: str = "auto") -> jax.Array:
    """Many depthwise convs of one input, stacked: the first layer of all conv candidates.

    Args:
      x: input, (N, H, W, C).
      kernels: one per spec, shape (G, k*k, C): G stacked copies (edges) of the kernel.
      specs: (kernel, dilation) per conv op; padding is `(kernel // 2) * dilation`.
      stride: spatial stride shared by all ops.
    Returns:
      (G, len(specs), N, Ho, Wo, C).
    """
    impl = resolve_impl(impl)
    n, h, w, c = x.shape
    out_hw = _out_hw(h, w, stride)
    if impl == "lax":
        outs = []
        for kern, (k, d) in zip(kernels, specs):
            g = kern.shape[0]
            rhs = jnp.transpose(kern.reshape(g, k, k, c), (1, 2, 3, 0)).reshape(k, k, 1, c * g)
            p = (k // 2) * d
            y = jax.lax.conv_general_dilated(
                x, rhs, (stride, stride), [(p, p), (p, p)], rhs_dilation=(d, d),
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
            outs.append(jnp.moveaxis(y.reshape(n, *out_hw, c, g), -1, 0))
        return jnp.stack(outs, axis=1)
    # CPU: gather the union of all ops' taps once, then one einsum (a batched matmul
    # over channels whose contraction is the tap axis). Zeros fill taps an op skips.
    union = sorted({t for k, d in specs for t in conv_taps(k, d)})
    where = {t: i for i, t in enumerate(union)}
    pad = max(max(abs(dy), abs(dx)) for dy, dx in union)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    stack = jnp.stack([_shifted(xp, pad, dy, dx, out_hw, stride) for dy, dx in union],
                      axis=-2)  # (N, Ho, Wo, T, C)
    dense = []
    for kern, (k, d) in zip(kernels, specs):
        # Place the op's k*k taps into the union with a constant 0/1 matrix.
        place = np.zeros((k * k, len(union)), np.float32)
        place[np.arange(k * k), [where[t] for t in conv_taps(k, d)]] = 1.0
        dense.append(jnp.einsum("gsc,st->tgc", kern, jnp.asarray(place, kern.dtype)))
    weights = jnp.stack(dense, axis=2)  # (T, G, O, C)
    return jnp.einsum("nhwtc,tgoc->gonhwc", stack, weights)


def stacked_depthwise(x: jax.Array, kernel: jax.Array, k: int, dilation: int = 1,
                      impl: str = "auto") -> jax.Array:
    """Stride-1 depthwise conv with a separate kernel per stacked input.

    Args:
      x: (G, N, H, W, C); kernel: (G, k*k, C). Returns (G, N, H, W, C).
    """
    impl = resolve_impl(impl)
    g, n, h, w, c = x.shape
    p = (k // 2) * dilation
    if impl == "lax":
        xs = jnp.moveaxis(x, 0, 3).reshape(n, h, w, g * c)
        rhs = jnp.moveaxis(kernel.reshape(g, k, k, c), 0, 2).reshape(k, k, 1, g * c)
        y = jax.lax.conv_general_dilated(
            xs, rhs, (1, 1), [(p, p), (p, p)], rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=g * c)
        return jnp.moveaxis(y.reshape(n, h, w, g, c), 3, 0)
    # Sum of shifted slices: one fused loop reading the input once (fast forward; the
    # stacked-einsum form would materialise k*k copies of a (G, N, H, W, C) tensor).
    xp = jnp.pad(x, ((0, 0), (0, 0), (p, p), (p, p), (0, 0)))
    out = None
    for t, (dy, dx) in enumerate(conv_taps(k, dilation)):
        term = _shifted(xp, p, dy, dx, (h, w), 1) * kernel[:, t, None, None, None, :]
        out = term if out is None else out + term
    return out


def stacked_pointwise(x: jax.Array, kernel: jax.Array, batch_dims: int) -> jax.Array:
    """1x1 convolution with one (Cin, Cout) matrix per leading stacked index."""
    lead = "abcdef"[:batch_dims]
    return jnp.einsum(f"{lead}nhwc,{lead}cd->{lead}nhwd", x, kernel)


def batch_norm_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance over N, H, W (axes -4..-2) of a stacked x."""
    axes = (-4, -3, -2)
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes)
    return mean, var


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array, eps: float = 1e-5) -> jax.Array:
    axes = (-4, -3, -2)
    return (x - jnp.expand_dims(mean, axes)) * jax.lax.rsqrt(jnp.expand_dims(var, axes) + eps)
