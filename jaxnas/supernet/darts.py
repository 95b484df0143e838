"""The DARTS CIFAR search supernet, with the architecture (op weights) as an input.

`DartsSupernet(...).apply(variables, images, arch, train=True, mutable=["batch_stats"])`
where `arch = {"normal": w[14, 8], "reduce": w[14, 8]}` holds per-edge op weights (softmax
of alphas for DARTS, one-hot rows for a discrete path). Values of `arch` never change
the traced graph, so one compiled step serves every architecture.

Formulations of the mixed op (see `SearchCell`), all computing the same function:
- fused groups: edges are grouped by their *source state*; for each group, pooling, skip
  and the four conv candidates of all its edges run as stacked computations (one
  tap-gather + einsum for the first depthwise layer of every conv op of every edge,
  stacked 1x1 convs, stacked BatchNorm). Pooling and BatchNorm without affine
  parameters do not depend on the edge, so they are computed once per source.
  `mixed_op="scan"` (default) runs the groups of the intermediate nodes under
  `nn.scan` (fewer bodies to compile); `mixed_op="fused"` unrolls them.
- `mixed_op="edges"`: every edge of a cell is one step of an `nn.scan` whose body is
  the fused mixed op of a single edge (a reduction cell: one scan for its stride-2 edges,
  one for the rest). One op body to compile per cell instead of one per edge group, so
  the step compiles several times faster (benchmarks/results/2026-12-02-edges).
- `mixed_op="loop"`: the reference formulation, one module per op per edge.
- `scan_cells=True` (any formulation): consecutive cells of equal input shapes
  (`steady_runs`) run under one `nn.scan` body, so compile time stops growing with depth.

Partial channels (PC-DARTS, Xu et al. 2020; `partial_channels=K`, loop formulation only):
each mixed op runs on the first C/K channels of its input, the other channels bypass it
(2x2 max-pooled on a stride-2 edge), the two parts are concatenated and channel-shuffled
with K groups (`channel_shuffle`), as the authors' `MixedOp`. K=1 is the plain mixed op.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces import cells
from jaxnas.spaces import ops as ops_lib
from jaxnas.supernet import kernels

PRIMITIVES = ops_lib.PRIMITIVES
MIXED_OPS = ("scan", "fused", "loop", "edges")
_CONV_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
_FIRST_LAYER = {"sep_conv_3x3": (3, 1), "sep_conv_5x5": (5, 1),
                "dil_conv_3x3": (3, 2), "dil_conv_5x5": (5, 2)}


def _torch_like_init(fan_in: int):
    """PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / fan_in ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class StackedBatchNorm(nn.Module):
    """Non-affine BatchNorm over N, H, W of x with leading stacked axes (..., N, H, W, C).

    Training normalises with batch statistics and updates running averages (momentum
    0.9, i.e. PyTorch's 0.1; the running variance averages the *unbiased* batch
    variance, as PyTorch does); evaluation uses the running averages.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        shape = x.shape[:-4] + x.shape[-1:]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, shape, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, shape, jnp.float32)
        if train:
            mean, var = kernels.batch_norm_stats(x)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
                unbiased = jax.lax.stop_gradient(var) * kernels.unbiased_factor(x)
                ra_var.value = m * ra_var.value + (1 - m) * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        return kernels.normalize(x, mean.astype(x.dtype), var.astype(x.dtype), self.epsilon)


class StemBatchNorm(nn.Module):
    """Affine BatchNorm of NHWC x, as PyTorch's `nn.BatchNorm2d` (the DARTS stem).

    Same variables as `flax.linen.BatchNorm` (params scale, bias; batch_stats mean,
    var), so weights load by the same names; unlike it, the running variance averages
    the unbiased batch variance (n / (n - 1)), as PyTorch does.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if train:
            mean, var = kernels.batch_norm_stats(x[None])
            mean, var = mean[0], var[0]
            if not self.is_initializing():
                m = self.momentum
                unbiased = jax.lax.stop_gradient(var) * kernels.unbiased_factor(x[None])
                ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
                ra_var.value = m * ra_var.value + (1 - m) * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = kernels.normalize(x[None], mean.astype(x.dtype), var.astype(x.dtype),
                              self.epsilon)[0]
        return y * scale.astype(x.dtype) + bias.astype(x.dtype)


class StackedReLUConv1x1BN(nn.Module):
    """ReLU, 1x1 conv, non-affine BN (the cell preprocessing of DARTS)."""

    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c_in = x.shape[-1]
        w = self.param("kernel", _torch_like_init(c_in), (c_in, self.channels))
        y = jnp.einsum("nhwc,cd->nhwd", jax.nn.relu(x), w)
        return StackedBatchNorm()(y[None], train)[0]


class StackedFactorizedReduce(nn.Module):
    """G stacked FactorizedReduce ops of one input: ReLU, two offset stride-2 1x1 convs."""

    stack: int
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c_in, half = x.shape[-1], self.channels // 2
        init = _torch_like_init(c_in)
        w1 = self.param("kernel_1", init, (self.stack, c_in, half))
        w2 = self.param("kernel_2", init, (self.stack, c_in, self.channels - half))
        r = jax.nn.relu(x)
        a = r[:, ::2, ::2, :]
        b = jnp.pad(r[:, 1::2, 1::2, :],
                    ((0, 0), (0, a.shape[1] - (r.shape[1] // 2)),
                     (0, a.shape[2] - (r.shape[2] // 2)), (0, 0)))
        y = jnp.concatenate([jnp.einsum("nhwc,gcd->gnhwd", a, w1),
                             jnp.einsum("nhwc,gcd->gnhwd", b, w2)], axis=-1)
        return StackedBatchNorm()(y, train)


class FusedEdgeGroup(nn.Module):
    """The mixed ops of all edges leaving one state, computed as stacked tensors.

    Returns (G, N, Ho, Wo, C): for each of the G edges, sum_k w[g, k] * op_k(x).
    drop=(key, rate): `skip_dropout` of the identity op's output, a mask per edge (stride
    1 only; P-DARTS).
    """

    stack: int
    channels: int
    stride: int
    primitives: Sequence[str] = PRIMITIVES
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, train: bool,
                 drop: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        g, c, s = self.stack, self.channels, self.stride
        col = {name: i for i, name in enumerate(self.primitives)}

        def weight(name: str) -> jax.Array:
            return w[:, col[name]].astype(x.dtype)[:, None, None, None, None]

        terms = []
        # Pooling and identity do not depend on the edge: compute once, weight per edge.
        if "max_pool_3x3" in col:
            pool = (kernels.max_pool_3x3 if kernels.resolve_impl(self.impl) == "slices"
                    else ops_lib.max_pool_3x3_reduce_window)
            mp = StackedBatchNorm(name="max_pool_bn")(pool(x, s)[None], train)
            terms.append(weight("max_pool_3x3") * mp)
        if "avg_pool_3x3" in col:
            ap = StackedBatchNorm(name="avg_pool_bn")(ops_lib.avg_pool_3x3(x, s)[None], train)
            terms.append(weight("avg_pool_3x3") * ap)
        if "skip_connect" in col:
            if s == 1 and drop is not None:
                skip = skip_dropout(jnp.broadcast_to(x[None], (g,) + x.shape), *drop)
                terms.append(weight("skip_connect") * skip)
            elif s == 1:
                terms.append(weight("skip_connect") * x[None])
            else:
                fr = StackedFactorizedReduce(g, c, name="skip_reduce")(x, train)
                terms.append(weight("skip_connect") * fr)
        convs = [name for name in _CONV_OPS if name in col]
        if convs:
            specs = [_FIRST_LAYER[name] for name in convs]
            dw1 = [self.param(f"{name}_dw1", _torch_like_init(k * k), (g, k * k, c))
                   for name, (k, _) in zip(convs, specs)]
            pw1 = self.param("pw1", _torch_like_init(c), (g, len(convs), c, c))
            y = kernels.multi_depthwise(jax.nn.relu(x), dw1, specs, s, self.impl)
            y = kernels.stacked_pointwise(y, pw1, batch_dims=2)
            y = StackedBatchNorm(name="bn1")(y, train)  # (G, O, N, Ho, Wo, C)
            for o, name in enumerate(convs):
                out = y[:, o]
                if name.startswith("sep_conv"):
                    k = _FIRST_LAYER[name][0]
                    dw2 = self.param(f"{name}_dw2", _torch_like_init(k * k), (g, k * k, c))
                    pw2 = self.param(f"{name}_pw2", _torch_like_init(c), (g, c, c))
                    out = kernels.stacked_depthwise(jax.nn.relu(out), dw2, k, 1, self.impl)
                    out = kernels.stacked_pointwise(out, pw2, batch_dims=1)
                    out = StackedBatchNorm(name=f"{name}_bn2")(out, train)
                terms.append(weight(name) * out)
        if not terms:  # only `none`: all zeros
            n, h, wd, _ = x.shape
            return jnp.zeros((g, n, (h - 1) // s + 1, (wd - 1) // s + 1, c), x.dtype)
        return sum(terms[1:], terms[0])


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet's channel shuffle of NHWC `x`, as PC-DARTS' `channel_shuffle` (NCHW
    view(groups, C/groups) -> transpose -> flatten): output channel i*groups + g is
    input channel g*(C/groups) + i."""
    *lead, c = x.shape
    y = x.reshape(*lead, groups, c // groups)
    return jnp.swapaxes(y, -1, -2).reshape(*lead, c)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """PyTorch's `nn.MaxPool2d(2, 2)` of NHWC `x` with even height and width."""
    n, h, w, c = x.shape
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def skip_dropout(x: jax.Array, key: jax.Array, rate: jax.Array) -> jax.Array:
    """Inverted dropout of `x` at `rate` in [0, 1) (P-DARTS' dropout after the identity
    op): each element kept with probability 1 - rate and scaled by 1 / (1 - rate). At
    rate 0 every element is kept and returned exactly."""
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros((), x.dtype))


class LoopMixedOp(nn.Module):
    """Reference mixed op: one module per candidate, sum_k w[k] * op_k(x).

    partial_channels=K > 1 (PC-DARTS): the ops are built for C/K channels and see
    x[..., :C/K]; the rest bypasses them (2x2 max pool when strided), the two parts are
    concatenated and `channel_shuffle`d with K groups. The bypass is scaled by sum_k w[k]
    (1 for softmax and one-hot weights), so that weights with an edge weight folded in,
    beta * w[k], scale the whole edge output by beta as PC-DARTS' edge normalisation does.

    drop=(key, rate): inverted dropout on the identity op's output (`skip_dropout`;
    P-DARTS), on stride-1 edges only (a stride-2 skip is a FactorizedReduce).

    single_path=True (GDAS' forward): only the op of largest weight, k* = argmax w,
    runs (`nn.switch`: one branch executes); the output is
    h[k*] * op_k*(x) + sum_{k != k*} h[k] with h = onehot(k*) + (w - stop_gradient(w)),
    which is op_k*(x) in value for any w and, for w a hard Gumbel sample, GDAS'
    `forward_gdas` exactly: dL/dw[k*] = <dL/dy, op_k*(x)>, dL/dw[k] = sum(dL/dy) for the
    others. Only the chosen op's BatchNorm statistics are updated. Initialisation runs
    every op (all parameters exist).

    paths=int32[M] (ProxylessNAS' two paths): only the ops `paths` run (one `nn.switch`
    each), out = sum_m w[paths[m]] op_paths[m](x): equal in value and in the gradients
    of those columns of `w` to the all-ops sum whenever w is 0 outside `paths` (the
    other columns are not read).
    """

    channels: int
    stride: int
    primitives: Sequence[str] = PRIMITIVES
    partial_channels: int = 1
    single_path: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, train: bool,
                 drop: tuple[jax.Array, jax.Array] | None = None,
                 paths: jax.Array | None = None) -> jax.Array:
        if paths is not None and self.single_path:
            raise ValueError("paths (ProxylessNAS) and single_path (GDAS) exclude each "
                             "other")
        k_pc = self.partial_channels
        c_op = self.channels // k_pc
        x_op = x if k_pc == 1 else x[..., :c_op]

        def op(k: int, x_op: jax.Array) -> jax.Array:
            name = self.primitives[k]
            y = ops_lib.OPS[name](c_op, self.stride, False, name=name)(x_op, train)
            if "pool" in name:
                y = StackedBatchNorm(name=f"{name}_bn")(y[None], train)[0]
            if drop is not None and name == "skip_connect" and self.stride == 1:
                y = skip_dropout(y, *drop)
            return y

        branches = [lambda mdl, x_op, k=k: op(k, x_op) for k in range(len(self.primitives))]
        if paths is not None and not self.is_initializing():
            out = 0.0
            for m in range(paths.shape[0]):
                y = nn.switch(paths[m], branches, self, x_op)
                out = out + w[paths[m]].astype(x.dtype) * y
        elif self.single_path and not self.is_initializing():
            chosen = jnp.argmax(w)
            y = nn.switch(chosen, branches, self, x_op)
            h = jax.nn.one_hot(chosen, w.shape[0], dtype=w.dtype) + (
                w - jax.lax.stop_gradient(w))
            out = h[chosen].astype(x.dtype) * y + (jnp.sum(h) - h[chosen]).astype(x.dtype)
        else:
            out = 0.0
            for k in range(len(self.primitives)):
                out = out + w[k].astype(x.dtype) * op(k, x_op)
        if k_pc == 1:
            return out
        rest = x[..., c_op:]
        if self.stride != 1:
            if rest.shape[1] % 2 or rest.shape[2] % 2:
                raise ValueError(f"partial_channels={k_pc}: a stride-2 edge needs an even "
                                 f"height and width to 2x2-pool its bypass, got "
                                 f"{rest.shape[1]}x{rest.shape[2]}")
            rest = max_pool_2x2(rest)
        rest = jnp.sum(w).astype(x.dtype) * rest
        return channel_shuffle(jnp.concatenate([out, rest], axis=-1), k_pc)


class _IntermediateSource(nn.Module):
    """One scan step: the edges leaving intermediate node `t` into the later nodes.

    The carry holds all node sums (steps, N, H, W, C). Source t feeds nodes t+1..;
    the step computes a fixed group of `steps - 1` edge slots (nodes 1..steps-1) and
    the rows of `w` for nodes <= t are zero, so those slots add nothing.
    """

    steps: int
    channels: int
    primitives: Sequence[str]
    impl: str
    train: bool

    @nn.compact
    def __call__(self, nodes: jax.Array, xs: tuple[jax.Array, jax.Array]):
        t, w = xs
        x = jax.lax.dynamic_index_in_dim(nodes, t, axis=0, keepdims=False)
        out = FusedEdgeGroup(self.steps - 1, self.channels, 1, self.primitives, self.impl,
                             name="group")(x, w, self.train)
        return nodes.at[1:].add(out), None


class _EdgeStep(nn.Module):
    """One scan step of `mixed_op="edges"`: the mixed op of edge e (src -> node dst)
    added into the node sums held in the carry.

    The source is read from the carry (`from_carry`: states that are complete because
    edges run node by node) or from the broadcast `inputs` (a reduction cell's two
    inputs, at the resolution before the stride-2 edges).
    """

    channels: int
    stride: int
    primitives: Sequence[str]
    impl: str
    train: bool
    from_carry: bool
    remat: bool = False

    @nn.compact
    def __call__(self, states: jax.Array, xs, inputs, drop):
        e, src, dst, w = xs
        x = jax.lax.dynamic_index_in_dim(states if self.from_carry else inputs, src,
                                         axis=0, keepdims=False)
        edge_drop = None if drop is None else (jax.random.fold_in(drop[0], e), drop[1])
        # remat: the backward pass recomputes the edge from its input, so an edge keeps
        # one activation (x) instead of every intermediate of its eight ops
        group = nn.remat(FusedEdgeGroup, static_argnums=(3,)) if self.remat else FusedEdgeGroup
        y = group(1, self.channels, self.stride, self.primitives, self.impl,
                  name="edge")(x, w[None], self.train, edge_drop)[0]
        node = jax.lax.dynamic_index_in_dim(states, dst, axis=0, keepdims=False)
        return jax.lax.dynamic_update_index_in_dim(states, node + y, dst, axis=0), None


def _edge_table(edges: Sequence[tuple[int, int]], base: int, from_carry: bool
                ) -> tuple[np.ndarray, ...]:
    """(edge rows, source index, target index) of `edges` [(src state, node)] for a
    carry whose entry 0 is state `base`; sources index the carry when `from_carry`,
    else the two cell inputs."""
    e = np.asarray([cells.edge_index(src, j) for src, j in edges], np.int32)
    src = np.asarray([src - (base if from_carry else 0) for src, _ in edges], np.int32)
    dst = np.asarray([j + 2 - base for _, j in edges], np.int32)
    return e, src, dst


def _intermediate_rows(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Arch rows and validity mask of the scanned edge slots, each (steps-1, steps-1)."""
    rows = np.zeros((steps - 1, steps - 1), np.int32)
    mask = np.zeros((steps - 1, steps - 1), np.float32)
    for t in range(steps - 1):          # source: intermediate node t (state t + 2)
        for slot in range(steps - 1):   # target: node slot + 1
            if slot + 1 > t:
                rows[t, slot] = cells.edge_index(t + 2, slot + 1)
                mask[t, slot] = 1.0
    return rows, mask


class SearchCell(nn.Module):
    """A DARTS search cell: preprocess both inputs, then `steps` nodes of mixed edges.

    Mixed-op formulations (`mixed_op`):
      "scan"  the edges leaving the two cell inputs run as one fused group vmapped over
              the two inputs; the edges leaving intermediate nodes run as one fused group
              under `nn.scan` over the source node. Two group bodies per cell instead of
              `steps + 1`, so compile time drops ~2.5x; the scanned group has fixed
              size, which computes (steps-1)^2 edge slots for steps*(steps-1)/2 edges
              (17 edge evaluations for 14 edges at steps=4) and holds those unused
              slots' parameters (they receive exactly zero gradient).
      "fused" one fused group per source state, unrolled: exactly 14 edge evaluations.
      "edges" one `nn.scan` step per edge (`_EdgeStep`), in row order (node by node, so
              every source is complete when read), the node sums in the carry: exactly
              14 edge evaluations and one edge body to compile (two in a reduction
              cell: its inputs' stride-2 edges, then the nodes' stride-1 edges).
      "loop"  the reference: one module per op per edge.

    `single_path` (loop only; GDAS): each edge runs only its op of largest weight
    (`LoopMixedOp`). `edge_primitives` (loop only; P-DARTS' pruned op sets): edge e builds and runs only
    the ops `edge_primitives[e]` (names among `primitives`), weighted by their columns
    of its row of `w` (the other columns are not read). `drop`: (key, rate) of
    `skip_dropout`, one key per edge. `paths` int32[E, M] (loop only; ProxylessNAS): edge
    e runs only the ops `paths[e]` (`LoopMixedOp`); the stacked forms compute every op.
    """

    channels: int
    reduction: bool
    reduction_prev: bool
    steps: int = 4
    multiplier: int = 4
    primitives: Sequence[str] = PRIMITIVES
    mixed_op: str = "scan"
    impl: str = "auto"
    partial_channels: int = 1
    edge_primitives: tuple[tuple[str, ...], ...] | None = None
    single_path: bool = False
    remat_edges: bool = False

    @nn.compact
    def __call__(self, s0: jax.Array, s1: jax.Array, w: jax.Array, train: bool,
                 drop: tuple[jax.Array, jax.Array] | None = None,
                 paths: jax.Array | None = None) -> jax.Array:
        c = self.channels
        if paths is not None and self.edge_primitives is not None:
            raise ValueError("paths (ProxylessNAS) index every primitive: not with "
                             "edge_primitives (P-DARTS' pruned op sets)")
        if self.reduction_prev:
            s0 = StackedFactorizedReduce(1, c, name="preprocess0")(s0, train)[0]
        else:
            s0 = StackedReLUConv1x1BN(c, name="preprocess0")(s0, train)
        s1 = StackedReLUConv1x1BN(c, name="preprocess1")(s1, train)
        if self.mixed_op == "scan":
            return self._scanned(s0, s1, w, train)
        if self.mixed_op == "edges":
            return self._edges(s0, s1, w, train, drop)
        states = [s0, s1]
        nodes: list[Any] = [0.0] * self.steps
        for src in range(self.steps + 1):
            stride = 2 if self.reduction and src < 2 else 1
            targets = cells.fan_out(src, self.steps)
            rows = jnp.asarray([cells.edge_index(src, j) for j in targets])
            if self.mixed_op == "fused":
                group_drop = (None if drop is None
                              else (jax.random.fold_in(drop[0], src), drop[1]))
                out = FusedEdgeGroup(len(targets), c, stride, tuple(self.primitives),
                                     self.impl, name=f"from_{src}")(states[src], w[rows],
                                                                    train, group_drop)
                for t, j in enumerate(targets):
                    nodes[j] = nodes[j] + out[t]
            else:
                for j in targets:
                    e = cells.edge_index(src, j)
                    prims = (tuple(self.primitives) if self.edge_primitives is None
                             else tuple(self.edge_primitives[e]))
                    edge_drop = (None if drop is None
                                 else (jax.random.fold_in(drop[0], e), drop[1]))
                    cols = np.asarray([list(self.primitives).index(p) for p in prims])
                    nodes[j] = nodes[j] + LoopMixedOp(
                        c, stride, prims, self.partial_channels, self.single_path,
                        name=f"edge_{e}")(states[src], w[e, cols], train, edge_drop,
                                          None if paths is None else paths[e])
            if src >= 1:  # node src-1 has now received all of its inputs
                states.append(nodes[src - 1])
        return jnp.concatenate(states[-self.multiplier:], axis=-1)

    def _edges(self, s0: jax.Array, s1: jax.Array, w: jax.Array, train: bool,
               drop: tuple[jax.Array, jax.Array] | None) -> jax.Array:
        c, steps, prims = self.channels, self.steps, tuple(self.primitives)
        edges = [(src, j) for j in range(steps) for src in range(j + 2)]  # row order

        def run(name, states, todo, base, stride, inputs):
            e, src, dst = _edge_table(todo, base, inputs is None)
            scan = nn.scan(_EdgeStep, variable_axes={"params": 0, "batch_stats": 0},
                           split_rngs={"params": True},
                           in_axes=(0, nn.broadcast, nn.broadcast), length=len(todo))
            xs = (jnp.asarray(e), jnp.asarray(src), jnp.asarray(dst), w[jnp.asarray(e)])
            step = scan(c, stride, prims, self.impl, train, inputs is None,
                        self.remat_edges, name=name)
            return step(states, xs, inputs, drop)[0]

        if not self.reduction:  # every edge stride 1: one body, the carry holds all states
            zeros = jnp.zeros((steps,) + s1.shape, s1.dtype)
            states = run("edges", jnp.concatenate([jnp.stack([s0, s1]), zeros]), edges,
                         0, 1, None)
            nodes = states[2:]
        else:  # the inputs' stride-2 edges, then the nodes' stride-1 edges
            n, h, wd, _ = s1.shape
            nodes = jnp.zeros((steps, n, (h - 1) // 2 + 1, (wd - 1) // 2 + 1, c), s1.dtype)
            nodes = run("input_edges", nodes, [ed for ed in edges if ed[0] < 2], 2, 2,
                        jnp.stack([s0, s1]))
            later = [ed for ed in edges if ed[0] >= 2]
            if later:
                nodes = run("node_edges", nodes, later, 2, 1, None)
        states = [s0, s1] + [nodes[j] for j in range(steps)]
        return jnp.concatenate(states[-self.multiplier:], axis=-1)

    def _scanned(self, s0: jax.Array, s1: jax.Array, w: jax.Array, train: bool) -> jax.Array:
        c, steps = self.channels, self.steps
        stride = 2 if self.reduction else 1
        prims = tuple(self.primitives)
        in_rows = jnp.asarray([[cells.edge_index(src, j) for j in range(steps)]
                               for src in (0, 1)])
        inputs = nn.vmap(FusedEdgeGroup, in_axes=(0, 0, None), out_axes=0,
                         variable_axes={"params": 0, "batch_stats": 0},
                         split_rngs={"params": True})
        out = inputs(steps, c, stride, prims, self.impl, name="from_inputs")(
            jnp.stack([s0, s1]), w[in_rows], train)
        nodes = out[0] + out[1]  # (steps, N, Ho, Wo, C)
        if steps > 1:
            rows, mask = _intermediate_rows(steps)
            w_mid = w[jnp.asarray(rows)] * jnp.asarray(mask, w.dtype)[..., None]
            scan = nn.scan(_IntermediateSource, variable_axes={"params": 0, "batch_stats": 0},
                           split_rngs={"params": True}, in_axes=0, length=steps - 1)
            nodes, _ = scan(steps, c, prims, self.impl, train, name="from_nodes")(
                nodes, (jnp.arange(steps - 1), w_mid))
        states = [s0, s1] + [nodes[j] for j in range(steps)]
        return jnp.concatenate(states[-self.multiplier:], axis=-1)


def steady_runs(layers: int, min_length: int = 2) -> list[tuple[int, int]]:
    """Runs [a, b) of consecutive cells whose inputs have equal shapes, at least
    `min_length` long: normal cells whose two predecessors are cells (not the stem) and
    whose previous cell is normal. Both inputs then have `multiplier * C` channels at the
    stage's resolution (a reduction cell's output has its stage's shape), so the cells
    of a run differ only in their parameters and can share one compiled body."""
    reductions = cells.reduction_layers(layers)
    steady = [i >= 2 and i not in reductions and i - 1 not in reductions
              for i in range(layers)]
    runs, i = [], 0
    while i < layers:
        j = i
        while j < layers and steady[j]:
            j += 1
        if j - i >= min_length:
            runs.append((i, j))
        i = max(j, i + 1)
    return runs


def scanned_cells_layout(variables: dict, layers: int) -> dict:
    """`variables` of a `DartsSupernet(scan_cells=False)` in the layout of
    `scan_cells=True`: the cells of each `steady_runs` run stacked along a new leading
    axis under "cells_<a>_<b>"/"cell" (the same function with those variables)."""
    out = {}
    for col, tree in variables.items():
        tree = dict(tree)
        for a, b in steady_runs(layers):
            parts = [tree.pop(f"cell_{i}") for i in range(a, b)]
            tree[f"cells_{a}_{b}"] = {"cell": jax.tree.map(lambda *x: jnp.stack(x), *parts)}
        out[col] = tree
    return out


class _RunStep(nn.Module):
    """One cell of a steady run under `nn.scan`: carry (s0, s1) -> (s1, cell(s0, s1))."""

    channels: int
    steps: int
    multiplier: int
    primitives: Sequence[str]
    mixed_op: str
    impl: str
    partial_channels: int
    edge_primitives: tuple[tuple[str, ...], ...] | None
    single_path: bool
    remat: bool
    remat_edges: bool
    train: bool

    @nn.compact
    def __call__(self, carry, i, w, drop, paths):
        s0, s1 = carry
        cell_cls = nn.remat(SearchCell, static_argnums=(4,)) if self.remat else SearchCell
        cell_drop = None if drop is None else (jax.random.fold_in(drop["key"], i),
                                               drop["rate"])
        out = cell_cls(self.channels, False, False, self.steps, self.multiplier,
                       tuple(self.primitives), self.mixed_op, self.impl,
                       self.partial_channels, self.edge_primitives, self.single_path,
                       self.remat_edges, name="cell")(s0, s1, w, self.train, cell_drop,
                                                      paths)
        return (s1, out), None


class DartsSupernet(nn.Module):
    """The DARTS CIFAR search network (stem, `layers` cells, global pool, classifier)."""

    channels: int = 16
    num_classes: int = 10
    layers: int = 8
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    primitives: Sequence[str] = PRIMITIVES
    mixed_op: str = "scan"
    impl: str = "auto"
    # Rematerialise each cell (`jax.checkpoint`): its activations are recomputed in the
    # backward pass instead of stored. Same parameters, same function. Measured at the
    # default size (benchmarks/README.md): no lower XLA peak (it lies inside a cell's
    # backward pass), 27% more CPU per step; hence off by default.
    remat: bool = False
    # PC-DARTS: 1/K of each edge's channels through its mixed op (LoopMixedOp); 1 = DARTS
    partial_channels: int = 1
    # P-DARTS: (normal, reduce) op names per edge; None = every primitive on every edge.
    # arch keeps one column per primitive. The loop form builds and runs only each
    # edge's ops (pruned columns are not read); the stacked forms compute every op, so
    # their pruned columns must be 0 (P-DARTS' relaxation feeds 0 there).
    edge_ops: tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]] | None = None
    # GDAS: each edge runs only the op of largest weight (LoopMixedOp; loop only), so a
    # step with one-hot samples costs about a single-path network
    single_path: bool = False
    # Run each `steady_runs` run of cells (equal input shapes; from 11 cells on) under
    # one `nn.scan` body, so that compile time stops growing with depth. Same function;
    # the run's variables are stacked under "cells_<a>_<b>" (`scanned_cells_layout`).
    scan_cells: bool = False
    # mixed_op="edges": rematerialise each edge (its ops recomputed from its input in the
    # backward pass): far less memory for more FLOPs, which on a CPU even ran faster
    # (less memory traffic; benchmarks/results/2026-12-02-edges)
    remat_edges: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, arch: dict, train: bool = True) -> jax.Array:
        """`arch`: {"normal": w[E, K], "reduce": w[E, K]}, and optionally
        "skip_dropout": {"key", "rate"} (P-DARTS; loop, fused and edges): inverted
        dropout on every stride-1 identity op's output, an independent mask per cell and
        edge (each form draws its masks from the key its own way); "paths":
        {"normal": int32[E, M], "reduce": int32[E, M]} (ProxylessNAS' sampled ops; the
        loop mixed op runs only those, the stacked ones every op, so the weights must be
        0 outside them)."""
        if self.mixed_op not in MIXED_OPS:
            raise ValueError(f"mixed_op={self.mixed_op!r}: expected one of {MIXED_OPS}")
        check_partial_channels(self.partial_channels, self.channels, self.mixed_op)
        drop, paths = arch.get("skip_dropout"), arch.get("paths")
        if drop is not None and self.mixed_op == "scan":
            raise ValueError("skip dropout (P-DARTS) needs mixed_op='loop', 'fused' or "
                             "'edges', got mixed_op='scan'")
        if self.remat_edges and self.mixed_op != "edges":
            raise ValueError(f"remat_edges needs mixed_op='edges', got "
                             f"mixed_op={self.mixed_op!r}")
        if self.single_path and self.mixed_op != "loop":
            raise ValueError(f"single_path (GDAS) needs mixed_op='loop', got "
                             f"mixed_op={self.mixed_op!r}")
        if self.mixed_op != "loop" and tuple(self.primitives) != tuple(PRIMITIVES):
            raise ValueError(f"mixed_op={self.mixed_op!r} is built for the DARTS "
                             f"primitives {PRIMITIVES}; use mixed_op='loop' for others")
        c_curr = self.stem_multiplier * self.channels
        stem_w = self.param("stem_kernel", _torch_like_init(9 * x.shape[-1]),
                            (3, 3, x.shape[-1], c_curr))
        s = jax.lax.conv_general_dilated(x, stem_w.astype(x.dtype), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        s = StemBatchNorm(name="stem_bn")(s, train)
        s0 = s1 = s
        c = self.channels
        reduction_prev = False
        reductions = cells.reduction_layers(self.layers)
        cell_cls = nn.remat(SearchCell, static_argnums=(4,)) if self.remat else SearchCell
        runs = dict(steady_runs(self.layers)) if self.scan_cells else {}
        i = 0
        while i < self.layers:
            if i in runs:
                paths_n = None if paths is None or self.mixed_op != "loop" else paths["normal"]
                run = nn.scan(_RunStep, variable_axes={"params": 0, "batch_stats": 0},
                              split_rngs={"params": True},
                              in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                              length=runs[i] - i)
                ops = None if self.edge_ops is None else self.edge_ops[0]
                (s0, s1), _ = run(c, self.steps, self.multiplier, tuple(self.primitives),
                                  self.mixed_op, self.impl, self.partial_channels, ops,
                                  self.single_path, self.remat, self.remat_edges, train,
                                  name=f"cells_{i}_{runs[i]}")(
                    (s0, s1), jnp.arange(i, runs[i]), arch["normal"], drop, paths_n)
                reduction_prev = False
                i = runs[i]
                continue
            reduction = i in reductions
            if reduction:
                c *= 2
            ops = None if self.edge_ops is None else self.edge_ops[int(reduction)]
            cell = cell_cls(c, reduction, reduction_prev, self.steps, self.multiplier,
                              tuple(self.primitives), self.mixed_op, self.impl,
                              self.partial_channels, ops, self.single_path,
                              self.remat_edges, name=f"cell_{i}")
            cell_drop = (None if drop is None
                         else (jax.random.fold_in(drop["key"], i), drop["rate"]))
            kind = "reduce" if reduction else "normal"
            cell_paths = (None if paths is None or self.mixed_op != "loop"
                          else paths[kind])
            s0, s1 = s1, cell(s0, s1, arch[kind], train, cell_drop, cell_paths)
            reduction_prev = reduction
            i += 1
        pooled = jnp.mean(s1, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(pooled)


def check_partial_channels(k: Any, channels: int, mixed_op: str) -> None:
    """ValueError unless `k` is a positive int dividing `channels`, and `mixed_op` is
    "loop" when k > 1 (the stacked formulations have no channel split)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"partial_channels={k!r}: expected a positive integer")
    if k > 1 and mixed_op != "loop":
        raise ValueError(f"partial_channels={k} needs mixed_op='loop', got "
                         f"mixed_op={mixed_op!r}")
    if channels % k:
        raise ValueError(f"partial_channels={k} must divide channels={channels}")


def arch_shape(steps: int = 4, primitives: Sequence[str] = PRIMITIVES) -> dict:
    """Shapes of the architecture input: {"normal": (E, K), "reduce": (E, K)}."""
    shape = (cells.num_edges(steps), len(primitives))
    return {"normal": shape, "reduce": shape}


def uniform_arch(steps: int = 4, primitives: Sequence[str] = PRIMITIVES,
                 dtype: Any = jnp.float32) -> dict:
    """Equal op weights on every edge (the softmax of all-zero alphas)."""
    return {k: jnp.full(v, 1.0 / len(primitives), dtype) for k, v in arch_shape(
        steps, primitives).items()}


# the one init_key lives in jaxnas.optim; re-exported for existing callers
from jaxnas.optim import init_key  # noqa: E402,F401
