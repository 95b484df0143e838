"""Batched numeric kernels of the fused mixed op: stacked depthwise convs, BN, 1x1 convs.

Every kernel works on tensors with leading "stack" axes (edges, ops) in front of NHWC, so
that the candidates of many edges run as one computation. Depthwise convolutions are
backend dependent: XLA's grouped convolution is slow on the CPU, the fast path on GPU/TPU.
Implementations (`impl`):
- "slices" (the CPU default): the conv is a sum of shifted slices of the padded input
  times per-channel weights, with a hand-written VJP. Autodiff of that sum is slow (the
  input gradient becomes a chain of pads, the weight gradient one full reduction per
  tap); here the weight gradient of all taps is ONE variadic reduction (a single pass
  over input and cotangent) and the input gradient is the transposed slice sum. The
  backward pass is built from differentiable ops, so second-order estimators (jvp of
  grad, grad of grad) differentiate through it.
- "taps": gather the shifted views once ((..., T, C) stack) and contract with einsum
  (the previous CPU default, kept for comparison; it moves 41x the activation).
- "lax": `lax.conv_general_dilated` with `feature_group_count` (GPU/TPU).
Measured with `jaxnas bench --suite kernels` (2-core CPU, idle, batch 32 x 32x32x16,
4 edges, forward + backward): the first layer of the four conv candidates 232 ms
("taps") -> 50 ms ("slices"), 64 -> 26 ms at stride 2; a stacked second layer
35 -> 8 ms (3x3), 88 -> 12 ms (5x5); the 3x3 max pool 21 -> 2 ms (`reduce_window`).
Whole steps, first and second order: `benchmarks/README.md`.
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


IMPLS = ("auto", "slices", "taps", "lax")


def resolve_impl(impl: str) -> str:
    """'auto' -> 'slices' on the CPU, 'lax' (grouped convolution) elsewhere."""
    if impl == "auto":
        return "slices" if jax.default_backend() == "cpu" else "lax"
    if impl not in IMPLS:
        raise ValueError(f"depthwise implementation {impl!r}: expected one of {IMPLS}")
    return impl


def _shifted(xp: jax.Array, pad: int, dy: int, dx: int, out_hw: tuple[int, int],
             stride: int) -> jax.Array:
    """The view of padded `xp` (..., H+2p, W+2p, C) that tap (dy, dx) reads."""
    ho, wo = out_hw
    y0, x0 = pad + dy, pad + dx
    return xp[..., y0:y0 + (ho - 1) * stride + 1:stride, x0:x0 + (wo - 1) * stride + 1:stride, :]


def _out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    return ((h - 1) // stride + 1, (w - 1) // stride + 1)


def _pad_hw(x: jax.Array, p: int) -> jax.Array:
    return jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(p, p), (p, p), (0, 0)])


def _tap_sum(xp: jax.Array, kern: jax.Array, taps: Taps, pad: int,
             out_hw: tuple[int, int], stride: int) -> jax.Array:
    """sum_t window_t(xp) * kern[..., t, :]: a depthwise conv of padded `xp`.

    xp: (..., N, Hp, Wp, C) (leading axes broadcast against kern's); kern: (..., T, C).
    """
    acc = None
    for t, (dy, dx) in enumerate(taps):
        term = _shifted(xp, pad, dy, dx, out_hw, stride) * kern[..., t, None, None, None, :]
        acc = term if acc is None else acc + term
    return acc


def _tap_correlation(xp: jax.Array, gy: jax.Array, taps: Taps, pad: int,
                     stride: int) -> jax.Array:
    """d(conv)/d(kern): sum over N, H, W of window_t(xp) * gy, all taps in ONE reduction.

    xp: (..., N, Hp, Wp, C) broadcasting against gy (..., N, Ho, Wo, C). Returns (..., T, C).
    A variadic `lax.reduce` computes every tap's sum in a single pass over the data
    (one-off timings while designing it, 5x5 taps of 32 x 32x32x16 x 4 edges: 25 separate
    reductions 23 ms, a stacked einsum 49-57 ms, this 4.8 ms).
    """
    out_hw = gy.shape[-3:-1]
    prods = [_shifted(xp, pad, dy, dx, out_hw, stride) * gy for dy, dx in taps]
    axes = (gy.ndim - 4, gy.ndim - 3, gy.ndim - 2)
    sums = jax.lax.reduce(prods, [jnp.zeros((), gy.dtype)] * len(prods),
                          lambda a, b: tuple(u + v for u, v in zip(a, b)), axes)
    return jnp.stack(sums, axis=-2)


def _transposed_tap_sum(gy: jax.Array, kern: jax.Array, taps: Taps, pad: int,
                        in_hw: tuple[int, int], stride: int = 1) -> jax.Array:
    """d(conv)/d(x): the slice sum of gy, dilated by `stride` and padded, with mirrored taps.

    Forward y[i] = sum_t x[i*s + d_t] k_t, so dx[j] = sum_t gyd[j - d_t] k_t where gyd
    is gy with s-1 zeros between its entries (interior padding).
    """
    (h, w), (ho, wo) = in_hw, gy.shape[-3:-1]
    s = stride
    cfg = ([(0, 0, 0)] * (gy.ndim - 3)
           + [(pad, h - 1 + pad - (ho - 1) * s, s - 1), (pad, w - 1 + pad - (wo - 1) * s, s - 1),
              (0, 0, 0)])
    gp = jax.lax.pad(gy, jnp.zeros((), gy.dtype), cfg)
    return _tap_sum(gp, kern, tuple((-dy, -dx) for dy, dx in taps), pad, in_hw, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_slices(x: jax.Array, kern: jax.Array, k: int, dilation: int,
                     stride: int) -> jax.Array:
    """Depthwise conv as a slice sum, with a fast hand-written VJP.

    x: (..., N, H, W, C); kern: (..., k*k, C) with the same leading axes (one kernel per
    stacked input; broadcast them first if they differ). Padding (k // 2) * dilation.
    Returns (..., N, Ho, Wo, C).
    """
    if x.shape[:-4] != kern.shape[:-2] or kern.shape[-2:] != (k * k, x.shape[-1]):
        raise ValueError(f"depthwise_slices: x {x.shape} and kernel {kern.shape} do not "
                         f"match: expected a kernel of shape {x.shape[:-4] + (k * k, x.shape[-1])}")
    return _depthwise_slices_fwd(x, kern, k, dilation, stride)[0]


def _depthwise_slices_fwd(x, kern, k, dilation, stride):
    p = (k // 2) * dilation
    out_hw = _out_hw(x.shape[-3], x.shape[-2], stride)
    return _tap_sum(_pad_hw(x, p), kern, conv_taps(k, dilation), p, out_hw, stride), (x, kern)


def _depthwise_slices_bwd(k, dilation, stride, res, gy):
    x, kern = res
    p, taps = (k // 2) * dilation, conv_taps(k, dilation)
    dkern = _tap_correlation(_pad_hw(x, p), gy, taps, p, stride)
    dx = _transposed_tap_sum(gy, kern, taps, p, x.shape[-3:-1], stride)
    return dx.astype(x.dtype), dkern.astype(kern.dtype)


depthwise_slices.defvjp(_depthwise_slices_fwd, _depthwise_slices_bwd)


def _separately(branches: Sequence, init: jax.Array) -> jax.Array:
    """init + sum of branches(), each compiled as its own loop nest.

    XLA's CPU fusion merges independent slice sums that feed one sum into a single loop
    nest; past ~100 shifted operands that nest runs ~7x slower than the pieces apart
    (one-off timing: 60 ms vs 8 ms for the input gradient of the four first-layer convs
    of 4 edges at batch 32 x 32x32x16). Branches of a
    `lax.switch` under a `scan` are separate computations, which keeps them apart.
    """
    if len(branches) == 1:
        return init + branches[0]()
    fns = [lambda acc, f=f: acc + f() for f in branches]
    out, _ = jax.lax.scan(lambda acc, i: (jax.lax.switch(i, fns, acc), None), init,
                          jnp.arange(len(fns)))
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _multi_depthwise_slices(x: jax.Array, kernels: tuple, specs: tuple,
                            stride: int) -> jax.Array:
    return _multi_depthwise_slices_fwd(x, kernels, specs, stride)[0]


def _multi_depthwise_slices_fwd(x, kernels, specs, stride):
    out_hw = _out_hw(x.shape[1], x.shape[2], stride)
    outs = []
    for kern, (k, d) in zip(kernels, specs):
        p = (k // 2) * d
        outs.append(_tap_sum(_pad_hw(x, p)[None], kern, conv_taps(k, d), p, out_hw, stride))
    return jnp.stack(outs, axis=1), (x, kernels)


def _multi_depthwise_slices_bwd(specs, stride, res, gy):
    x, kernels = res
    n, h, w, c = x.shape
    dkernels, branches = [], []
    for o, (kern, (k, d)) in enumerate(zip(kernels, specs)):
        p, taps = (k // 2) * d, conv_taps(k, d)
        dkernels.append(_tap_correlation(_pad_hw(x, p)[None], gy[:, o], taps, p,
                                         stride).astype(kern.dtype))
        for g in range(kern.shape[0]):
            branches.append(lambda g=g, o=o, kern=kern, p=p, taps=taps: _transposed_tap_sum(
                gy[g, o], kern[g], taps, p, (h, w), stride).astype(x.dtype))
    dx = _separately(branches, jnp.zeros_like(x))
    return dx, tuple(dkernels)


_multi_depthwise_slices.defvjp(_multi_depthwise_slices_fwd, _multi_depthwise_slices_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    """3x3 max pool, padding 1 with -inf, NHWC (with leading stacked axes allowed).

    The max of 9 shifted slices, with a hand-written VJP: the gradient goes to the first
    maximal tap in row-major window order (what XLA's select-and-scatter does for
    `lax.reduce_window` max). Autodiff of the reduce-window form builds an argmax
    reduce-window with index outputs and a scatter: ~10% of a DARTS weight step here.
    """
    return _max_pool_fwd(x, stride)[0]


def _max_pool_fwd(x, stride):
    out_hw = _out_hw(x.shape[-3], x.shape[-2], stride)
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)],
                 constant_values=-jnp.inf)
    y = None
    for dy, dx in conv_taps(3, 1):
        v = _shifted(xp, 1, dy, dx, out_hw, stride)
        y = v if y is None else jnp.maximum(y, v)
    return y, (x, y)


def _max_pool_bwd(stride, res, gy):
    x, y = res
    out_hw = y.shape[-3:-1]
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)],
                 constant_values=-jnp.inf)
    taken = jnp.zeros(y.shape, bool)
    dx = None
    for dy, dx_ in conv_taps(3, 1):
        hit = (_shifted(xp, 1, dy, dx_, out_hw, stride) == y) & ~taken
        taken = taken | hit
        g = jnp.where(hit, gy, jnp.zeros((), gy.dtype))
        # scatter g back to the input pixel this tap read: the transposed tap sum
        # with a single tap and weight one
        term = _transposed_tap_sum(g, jnp.ones((1, 1), gy.dtype), ((dy, dx_),), 1,
                                   x.shape[-3:-1], stride)
        dx = term if dx is None else dx + term
    return (dx,)


max_pool_3x3.defvjp(_max_pool_fwd, _max_pool_bwd)


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
    if impl == "slices":
        return _multi_depthwise_slices(x, tuple(kernels), tuple(map(tuple, specs)), stride)
    if impl == "lax":
        outs = []
        for kern, (k, d) in zip(kernels, specs):
            g = kern.shape[0]
            rhs = jnp.transpose(kern.reshape(g, k, k, c), (1, 2, 3, 0)).reshape(k, k, 1, c * g)
            rhs = rhs.astype(x.dtype)  # conv_general_dilated wants one dtype (float64 runs)
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
    if impl == "slices":
        return depthwise_slices(x, kernel, k, dilation, 1)
    if impl == "lax":
        xs = jnp.moveaxis(x, 0, 3).reshape(n, h, w, g * c)
        rhs = jnp.moveaxis(kernel.reshape(g, k, k, c), 0, 2).reshape(k, k, 1, g * c)
        rhs = rhs.astype(x.dtype)
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


def unbiased_factor(x: jax.Array) -> float:
    """n / (n - 1) for the n = N*H*W values per channel of a stacked x: turns the biased
    batch variance into the unbiased one that PyTorch's running variance averages."""
    n = x.shape[-4] * x.shape[-3] * x.shape[-2]
    return n / (n - 1) if n > 1 else 1.0


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array, eps: float = 1e-5) -> jax.Array:
    axes = (-4, -3, -2)
    return (x - jnp.expand_dims(mean, axes)) * jax.lax.rsqrt(jnp.expand_dims(var, axes) + eps)
