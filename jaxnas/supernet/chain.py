"""Chain supernet (SPOS / FairNAS): stacked choice blocks, the path is an input.

`ChainSupernet` is the weight-sharing network of a `jaxnas.spaces.chain.ChainSpace`.
``apply(variables, x, path, train)`` takes the path as an input (int32[L] choice
indices, or a one-hot float[L, K] that is reduced by argmax), so one compiled
function serves every path, and `apply_paths` runs a leading batch of paths under
`jax.vmap`.  `ChainNet` is the discrete single-path network (for retraining; see
`build_path_network`), and `extract_path_variables` copies a path's inherited weights
out of the supernet.

How "one of 6 blocks" runs (``dispatch``):

* ``"gather"`` (default): the six candidates of a layer keep *one* stacked parameter
  set with a leading choice axis, padded to the largest candidate: depthwise kernels
  are 7x7 (a 3x3 or 5x5 kernel sits zero-padded in the centre, the taps outside it
  masked), hidden widths are ``6 * c_in`` (an expansion-3 block uses the first
  ``3 * c_in`` hidden channels, the rest masked to zero after each BatchNorm).  All
  choices then share one shape, so a layer gathers ``params[choice]`` by a dynamic
  index and computes exactly one block.  Under `vmap` over paths (FairNAS' m paths,
  an evolution population) the gather simply becomes a batched gather: every path
  still computes one block, so the cost is m blocks, not 6m.  The price is that
  every block runs at the size of the largest (7x7, expansion 6).  Masking rather
  than two stacks (one per expansion) keeps a single dynamic gather per layer: two
  stacks would need a branch, and a branch under `vmap` computes both sides.
* ``"switch"``: `jax.lax.switch` over the six choices, each branch slicing its real
  kernel and hidden width out of the same padded parameters *statically*, so a
  single path computes its block at its true size.  Under `vmap` a switch turns
  into a select that computes all six branches, so it is for single paths only.
  Measured on the digits space (2 shared CPU cores, batch 64, one SPOS step): gather
  43 ms a step and 12 s to compile, switch 106 ms and 44 s (six branches compiled
  per layer, and the backward pass of a switch materialises zero gradients for every
  operand): gather is the default everywhere.

On the CPU the padding of the kernel is free for small feature maps: the "toeplitz"
depthwise form (`depthwise`) costs the same for any kernel size, and for a 7x7
kernel on an 8x8 map it is ~10x faster forward+backward than k*k shifted slices.

Both dispatches compute the same function with the same parameters (tested), and
gradients reach only the chosen block's parameters (and in it only the unpadded
entries): unchosen choices get exactly zero gradient.

BatchNorm: every choice has its own BatchNorm parameters and running statistics
(stacked with the other parameters), updated only when that choice runs.  A block's
statistics still depend on the blocks before it in whichever paths trained it, so
supernet-based fitness recalibrates them per path (`jaxnas.strategies.oneshot`).
Running statistics use momentum ``bn_momentum`` (flax convention: ``new = m * old +
(1 - m) * batch``, biased variance); ``bn_momentum=0`` stores the batch statistics,
which is what recalibration uses.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces import chain as space_lib
from jaxnas.spaces.chain import CHOICES, MAX_EXPANSION, MAX_KERNEL, NUM_CHOICES
from jaxnas.supernet import kernels
from jaxnas.types import Array, PyTree

EPS = 1e-5
DISPATCHES = ("gather", "switch")

# ----------------------------------------------------------------------------------
# Numerics shared by the supernet and the discrete network.


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


# ----------------------------------------------------------------------------------
# Parameter layout of a layer's six stacked choices.


def _hidden(spec: space_lib.LayerSpec) -> int:
    return MAX_EXPANSION * spec.in_channels


def _tap_offsets(k: int) -> np.ndarray:
    """Positions in the row-major 7x7 tap list of a centred k x k kernel's taps."""
    off = (MAX_KERNEL - k) // 2
    return np.array([(off + dy) * MAX_KERNEL + off + dx for dy in range(k)
                     for dx in range(k)], np.int32)


def masks(spec: space_lib.LayerSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(hidden_mask float32[K, 6 c_in], tap_mask float32[K, 49])`` of a layer."""
    hidden = np.zeros((NUM_CHOICES, _hidden(spec)), np.float32)
    taps = np.zeros((NUM_CHOICES, MAX_KERNEL ** 2), np.float32)
    for i, c in enumerate(CHOICES):
        hidden[i, :c.expansion * spec.in_channels] = 1.0
        taps[i, _tap_offsets(c.kernel)] = 1.0
    return hidden, taps


def slice_choice(tree: dict, spec: space_lib.LayerSpec, choice: int) -> dict:
    """A choice's unpadded parameters or statistics out of a layer's stacked ones."""
    c = CHOICES[choice]
    h = c.expansion * spec.in_channels
    out = {}
    for name, value in tree.items():
        v = value[choice]
        if name == "dw":
            v = v[_tap_offsets(c.kernel), :h]
        elif name == "expand":
            v = v[:, :h]
        elif name == "project":
            v = v[:h]
        elif name.startswith(("bn1", "bn2")):
            v = v[:h]
        out[name] = v
    return out


def _he_normal(key: Array, shape: Sequence[int], fan_in: int) -> Array:
    return jax.random.normal(key, shape, jnp.float32) * np.sqrt(2.0 / fan_in)


def _stacked_init(kind: str, spec: space_lib.LayerSpec):
    """Initializer of a stacked weight: He-normal per choice with its real fan-in,
    zero in the padding (which never receives a gradient, so stays zero)."""
    hidden_mask, tap_mask = masks(spec)
    hidden = np.array([c.expansion * spec.in_channels for c in CHOICES], np.float64)
    fan_in = {"expand": np.full(NUM_CHOICES, spec.in_channels, np.float64),
              "dw": np.array([c.kernel ** 2 for c in CHOICES], np.float64),
              "project": hidden}[kind]
    if kind == "expand":
        mask = hidden_mask[:, None, :]
    elif kind == "dw":
        mask = tap_mask[:, :, None] * hidden_mask[:, None, :]
    else:
        mask = hidden_mask[:, :, None]
    scale = (np.sqrt(2.0 / fan_in)[:, None, None] * mask).astype(np.float32)

    def init(key: Array, shape: Sequence[int]) -> Array:
        return jax.random.normal(key, shape, jnp.float32) * scale

    return init


def init_key(key: Array) -> Array:
    """An "rbg" PRNG key derived from ``key``, for parameter initialisation.

    XLA compiles each threefry draw as an unrolled hash, which makes ``jit(init)``
    of a network slow to compile on the CPU (the DARTS supernet: ~20 s against ~6 s
    with "rbg").  Deterministic given ``key``.
    """
    data = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    return jax.random.wrap_key_data(jnp.resize(data, (4,)), impl="rbg")


def _scale_init(spec: space_lib.LayerSpec, bn: str):
    """BatchNorm scale initializer: ones, but zeros for the last BatchNorm of a
    residual block, so that every residual block starts as the identity (Goyal et
    al. 2017).  In a supernet this matters: with all layers' choices random from
    the first step, a supernet started with ones sat at chance level for about 200
    SPOS steps on the digits, and one started with zeros learns at once."""
    if bn == "bn3" and spec.residual:
        return nn.initializers.zeros
    return nn.initializers.ones


class ChoiceLayer(nn.Module):
    """One searchable layer: six stacked inverted-residual candidates."""

    spec: space_lib.LayerSpec
    dispatch: str = "gather"
    impl: str = "auto"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, choice: Array, train: bool) -> Array:
        spec, k = self.spec, NUM_CHOICES
        h, c_out = _hidden(spec), spec.out_channels
        p = {
            "expand": self.param("expand", _stacked_init("expand", spec),
                                 (k, spec.in_channels, h)),
            "dw": self.param("dw", _stacked_init("dw", spec), (k, MAX_KERNEL ** 2, h)),
            "project": self.param("project", _stacked_init("project", spec),
                                  (k, h, c_out)),
        }
        widths = {"bn1": h, "bn2": h, "bn3": c_out}
        stat_vars = {}
        for name, width in widths.items():
            p[f"{name}_scale"] = self.param(f"{name}_scale", _scale_init(spec, name),
                                            (k, width))
            p[f"{name}_bias"] = self.param(f"{name}_bias", nn.initializers.zeros,
                                           (k, width))
            stat_vars[f"{name}_mean"] = self.variable(
                "batch_stats", f"{name}_mean", jnp.zeros, (k, width), jnp.float32)
            stat_vars[f"{name}_var"] = self.variable(
                "batch_stats", f"{name}_var", jnp.ones, (k, width), jnp.float32)
        stats = {n: v.value for n, v in stat_vars.items()}
        common = dict(stride=spec.stride, residual=spec.residual, train=train,
                      momentum=self.bn_momentum, impl=self.impl)
        if self.dispatch == "gather":
            hidden_mask, tap_mask = masks(spec)
            hidden_mask = jnp.asarray(hidden_mask)[choice]
            chosen_stats = jax.tree.map(lambda a: a[choice], stats)
            y, new = inverted_residual(
                x, jax.tree.map(lambda a: a[choice], p), chosen_stats,
                kernel=MAX_KERNEL, hidden_mask=hidden_mask,
                tap_mask=jnp.asarray(tap_mask)[choice], **common)
            # padded hidden channels keep their (unused) statistics
            new = {n: (jnp.where(hidden_mask > 0, v, chosen_stats[n])
                       if n.startswith(("bn1", "bn2")) else v) for n, v in new.items()}
            new_stats = {n: stats[n].at[choice].set(new[n]) for n in stats}
        elif self.dispatch == "switch":
            def branch(i: int):
                def run(x: Array, p: dict, stats: dict) -> tuple[Array, dict]:
                    y, new = inverted_residual(
                        x, slice_choice(p, spec, i), slice_choice(stats, spec, i),
                        kernel=CHOICES[i].kernel, **common)
                    width = CHOICES[i].expansion * spec.in_channels
                    out = {}
                    for n, v in stats.items():
                        cols = width if n.startswith(("bn1", "bn2")) else c_out
                        out[n] = v.at[i, :cols].set(new[n])
                    return y, out
                return run

            y, new_stats = jax.lax.switch(choice, [branch(i) for i in range(k)], x, p,
                                          stats)
        else:
            raise ValueError(f"dispatch={self.dispatch!r}: expected one of "
                             f"{', '.join(DISPATCHES)}")
        if train and not self.is_initializing():
            for n, var in stat_vars.items():
                var.value = new_stats[n]
        return y


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
            "expand": self.param("expand", lambda k, s: _he_normal(k, s, s[0]),
                                 (spec.in_channels, h)),
            "dw": self.param("dw", lambda k, s: _he_normal(k, s, c.kernel ** 2),
                             (c.kernel ** 2, h)),
            "project": self.param("project", lambda k, s: _he_normal(k, s, s[0]),
                                  (h, spec.out_channels)),
        }
        stat_vars = {}
        for name, width in {"bn1": h, "bn2": h, "bn3": spec.out_channels}.items():
            p[f"{name}_scale"] = self.param(f"{name}_scale", _scale_init(spec, name),
                                            (width,))
            p[f"{name}_bias"] = self.param(f"{name}_bias", nn.initializers.zeros,
                                           (width,))
            stat_vars[f"{name}_mean"] = self.variable(
                "batch_stats", f"{name}_mean", jnp.zeros, (width,), jnp.float32)
            stat_vars[f"{name}_var"] = self.variable(
                "batch_stats", f"{name}_var", jnp.ones, (width,), jnp.float32)
        y, new = inverted_residual(
            x, p, {n: v.value for n, v in stat_vars.items()}, kernel=c.kernel,
            stride=spec.stride, residual=spec.residual, train=train,
            momentum=self.bn_momentum, impl=self.impl)
        if train and not self.is_initializing():
            for n, var in stat_vars.items():
                var.value = new[n]
        return y


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


class _Stem(nn.Module):
    space: space_lib.ChainSpace
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        s = self.space
        w = self.param("kernel", lambda k, sh: _he_normal(k, sh, 9 * sh[2]),
                       (3, 3, x.shape[-1], s.stem_channels))
        y = jax.lax.conv_general_dilated(
            x, w, (s.stem_stride, s.stem_stride), [(1, 1), (1, 1)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return relu6(BatchNorm(self.bn_momentum, name="bn")(y, train))


class _Head(nn.Module):
    space: space_lib.ChainSpace
    num_classes: int
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        s = self.space
        w = self.param("kernel", lambda k, sh: _he_normal(k, sh, sh[0]),
                       (x.shape[-1], s.head_channels))
        y = jnp.einsum("nhwc,cd->nhwd", x, w)
        y = relu6(BatchNorm(self.bn_momentum, name="bn")(y, train))
        return nn.Dense(self.num_classes, name="classifier")(jnp.mean(y, axis=(1, 2)))


def _check_input(space: space_lib.ChainSpace, x: Array) -> None:
    if x.ndim != 4 or x.shape[-1] != space.in_channels:
        raise ValueError(f"expected NHWC images with {space.in_channels} channels, got "
                         f"shape {x.shape}")


class ChainSupernet(nn.Module):
    """The weight-sharing supernet of a chain space; the path is an input.

    ``apply(variables, x, path, train=True)``; ``path`` is int32[L] or one-hot
    float[L, K].  Parameters of layer ``l`` live under ``layer{l}`` with a leading
    choice axis of size K (see the module docstring for the padded layout).
    """

    space: space_lib.ChainSpace
    num_classes: int
    dispatch: str = "gather"
    impl: str = "auto"
    bn_momentum: float = 0.9

    @property
    def num_layers(self) -> int:
        return self.space.num_layers

    @property
    def num_choices(self) -> int:
        return NUM_CHOICES

    @nn.compact
    def __call__(self, x: Array, path: Array, train: bool = True) -> Array:
        _check_input(self.space, x)
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"dispatch={self.dispatch!r}: expected one of "
                             f"{', '.join(DISPATCHES)}")
        path = as_indices(path)
        if path.shape != (self.space.num_layers,):
            raise ValueError(f"path has shape {path.shape}, expected "
                             f"({self.space.num_layers},) for this space")
        x = _Stem(self.space, self.bn_momentum, name="stem")(x, train)
        for l, spec in enumerate(self.space.layers()):
            x = ChoiceLayer(spec, self.dispatch, self.impl, self.bn_momentum,
                            name=f"layer{l}")(x, path[l], train)
        return _Head(self.space, self.num_classes, self.bn_momentum, name="head")(
            x, train)


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
        _check_input(self.space, x)
        path = space_lib.check_path(self.space, self.choices)
        x = _Stem(self.space, self.bn_momentum, name="stem")(x, train)
        for l, (spec, choice) in enumerate(zip(self.space.layers(), path)):
            x = Block(spec, choice, self.impl, self.bn_momentum, name=f"layer{l}")(
                x, train)
        return _Head(self.space, self.num_classes, self.bn_momentum, name="head")(
            x, train)


def build_path_network(space: space_lib.ChainSpace, path: Sequence[int],
                       num_classes: int, *, impl: str = "auto",
                       bn_momentum: float = 0.9) -> ChainNet:
    """The discrete single-path network of ``path`` (to retrain from scratch)."""
    return ChainNet(space, space_lib.check_path(space, path), num_classes, impl=impl,
                    bn_momentum=bn_momentum)


def extract_path_variables(space: space_lib.ChainSpace, variables: PyTree,
                           path: Sequence[int]) -> dict[str, Any]:
    """The `ChainNet` variables of ``path`` inherited from supernet ``variables``."""
    path = space_lib.check_path(space, path)
    out = {}
    for collection, tree in variables.items():
        tree = dict(tree)
        for l, (spec, choice) in enumerate(zip(space.layers(), path)):
            tree[f"layer{l}"] = slice_choice(dict(tree[f"layer{l}"]), spec, choice)
        out[collection] = tree
    return out


def apply_paths(model: ChainSupernet, variables: PyTree, x: Array, paths: Array,
                train: bool = False) -> Array:
    """Logits float[P, N, classes] of a leading batch of paths, by one `vmap`.

    In training mode the batch statistics are used and the running ones discarded.
    """
    def one(path: Array) -> Array:
        if train:
            return model.apply(variables, x, path, train=True,
                               mutable=["batch_stats"])[0]
        return model.apply(variables, x, path, train=False)

    return jax.vmap(one)(paths)


def merge_path_stats(old: PyTree, per_path: PyTree, paths: Array) -> PyTree:
    """Combines the batch statistics that m paths computed in parallel (FairNAS).

    ``per_path`` has a leading path axis.  For a choice layer ``layer{l}`` each
    choice's statistics come from the path that chose it (the mean over the paths
    that chose it, if several did), and stay ``old`` if none did; for the shared
    stem and head BatchNorms the paths' statistics are averaged.
    """
    paths = jnp.asarray(paths)
    out = {}
    for name, sub in old.items():
        if name.startswith("layer"):
            l = int(name[len("layer"):])
            hits = jax.nn.one_hot(paths[:, l], NUM_CHOICES, dtype=jnp.float32)  # [m, K]
            count = hits.sum(0)

            def pick(o: Array, p: Array) -> Array:
                w = hits.reshape(hits.shape + (1,) * (o.ndim - 1))
                total = jnp.sum(w * p, axis=0)
                c = count.reshape((-1,) + (1,) * (o.ndim - 1))
                return jnp.where(c > 0, total / jnp.maximum(c, 1.0), o)

            out[name] = jax.tree.map(pick, sub, per_path[name])
        else:
            out[name] = jax.tree.map(lambda p: jnp.mean(p, axis=0), per_path[name])
    return out


def count_variables(tree: PyTree) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(tree)))
