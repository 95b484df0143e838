"""The NAS-Bench-201 search supernet, with the op weights f32[6, 5] as an input.

`NB201Supernet(C, N, num_classes).apply(variables, images, arch, train=True,
mutable=["batch_stats"])`: NB201's macro skeleton (xautodl ``TinyNetworkDarts``: stem
conv3x3 + BN, three stages of N search cells at C, 2C, 4C joined by stride-2 ResNet
basic blocks, BN + ReLU, global pool, linear) around AutoDL's search cell
(``NAS201SearchCell``): 4 nodes, node i the sum over j < i of the mixed op of edge
(i <- j), ``sum_k w[e, k] * op_k(node_j)`` over the 5 ops of `jaxnas.spaces.nb201.OPS`
(``none`` zeros, ``skip_connect`` identity, ``nor_conv_kxk`` ReLU-conv-BN,
``avg_pool_3x3`` without padding counts and without a BatchNorm, as AutoDL).  One cell
type: every cell reads the same ``arch`` (as NB201's DARTS and GDAS).  ``arch`` is
f32[6, 5] op weights (softmax of alphas, a Gumbel sample, one-hot rows) or an int[6]
path of op indices (made one-hot), so one compiled step serves every architecture.
The cell BatchNorms are non-affine by default (``affine=False``, AutoDL's search
setting; True gives them scale and bias, so that a one-hot path is exactly the discrete
`jaxnas.networks.nb201.TinyNetwork`).  AutoDL's non-affine convs carry a bias that
the BatchNorm right after them cancels; it is left out here (same function).

Mixed-op formulations (``mixed_op``), the same function:

* ``"loop"`` (default): the plain reference, one module per conv op per edge.
* ``"fused"``: the edges leaving one node are computed together: one ReLU, one 3x3
  convolution with the kernels of all of them stacked on the output channels, one
  stacked 1x1 matmul, one stacked BatchNorm; the pooled input and the identity are
  computed once per node and weighted per edge (3 groups per cell, not 12 convs).
* ``"scan"``: ``"fused"`` cells, the N cells of a stage under `nn.scan` (parameters
  stacked on a leading axis), so compile time does not grow with N.

The loop is the default because it had the fastest step at small sizes on the CPU
(figures and the command that measures them:
``experiments/results/nb201_collapse/notes.md``, ``bench_mixed_op.py``).
`extract_network_variables` copies a path's weights out of the supernet into
`TinyNetwork`'s variables (tests map the two and compare them).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces import nb201
from jaxnas.spaces.ops import BatchNorm, avg_pool_3x3, torch_conv_init
from jaxnas.supernet.darts import StackedBatchNorm

MIXED_OPS = ("loop", "fused", "scan")
PRIMITIVES = nb201.OPS
_NUM_OPS = len(PRIMITIVES)
_COL = {name: i for i, name in enumerate(PRIMITIVES)}
_CONVS = (("nor_conv_1x1", 1), ("nor_conv_3x3", 3))  # the stacked conv axis order


def _stacked_init(batch_axes: tuple[int, ...]):
    """PyTorch's conv init U(+-1/sqrt(fan_in)) per stacked kernel (leading axes are
    copies, not fan-in)."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform",
                                            batch_axis=batch_axes)


def as_weights(arch: jax.Array) -> jax.Array:
    """Op weights f32[6, 5] of ``arch``: weights as they are, an int path one-hot."""
    arch = jnp.asarray(arch)
    if jnp.issubdtype(arch.dtype, jnp.integer):
        if arch.shape != (nb201.NUM_EDGES,):
            raise ValueError(f"an NB201 path has shape ({nb201.NUM_EDGES},), got "
                             f"{arch.shape}")
        return jax.nn.one_hot(arch, _NUM_OPS, dtype=jnp.float32)
    if arch.shape != (nb201.NUM_EDGES, _NUM_OPS):
        raise ValueError(f"NB201 op weights have shape ({nb201.NUM_EDGES}, "
                         f"{_NUM_OPS}), got {arch.shape}")
    return arch


def _edge(i: int, j: int) -> int:
    return nb201.EDGES.index((i, j))


class FusedGroup(nn.Module):
    """The mixed ops of the G edges leaving one node: returns (G, N, H, W, C)."""

    targets: tuple[int, ...]   # the nodes the edges go to
    source: int
    affine: bool
    bn_momentum: float

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, train: bool) -> jax.Array:
        g, c = len(self.targets), x.shape[-1]
        rows = np.array([_edge(i, self.source) for i in self.targets])
        wg = w[rows].astype(x.dtype)  # (G, 5)
        k3 = self.param("conv3", _stacked_init((0,)), (g, 3, 3, c, c))
        k1 = self.param("conv1", _stacked_init((0,)), (g, c, c))
        r = jax.nn.relu(x)
        # all G 3x3 kernels as one conv with G*C output channels (index g*C + d)
        rhs = jnp.moveaxis(k3, 0, 3).reshape(3, 3, c, g * c).astype(x.dtype)
        y3 = jax.lax.conv_general_dilated(r, rhs, (1, 1), ((1, 1), (1, 1)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y3 = jnp.moveaxis(y3.reshape(y3.shape[:3] + (g, c)), 3, 0)
        y1 = jnp.einsum("nhwc,gcd->gnhwd", r, k1.astype(x.dtype))
        y = StackedBatchNorm(momentum=self.bn_momentum, name="bn")(
            jnp.stack([y1, y3], axis=1), train)  # (G, 2, N, H, W, C)
        if self.affine:
            scale = self.param("scale", nn.initializers.ones, (g, 2, c))
            bias = self.param("bias", nn.initializers.zeros, (g, 2, c))
            y = (y * scale[:, :, None, None, None].astype(x.dtype)
                 + bias[:, :, None, None, None].astype(x.dtype))

        def weight(name: str) -> jax.Array:
            return wg[:, _COL[name], None, None, None, None]

        # `none` adds nothing; skip and pooling do not depend on the edge
        return (weight("skip_connect") * x[None]
                + weight("avg_pool_3x3") * avg_pool_3x3(x, 1)[None]
                + weight("nor_conv_1x1") * y[:, 0] + weight("nor_conv_3x3") * y[:, 1])


class ReLUConvBN(nn.Module):
    """ReLU, conv (no bias, PyTorch init), BatchNorm (affine or not, `momentum`)."""

    features: int
    kernel: int
    stride: int
    affine: bool
    momentum: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        k, p = self.kernel, self.kernel // 2
        x = nn.Conv(self.features, (k, k), (self.stride, self.stride),
                    padding=((p, p), (p, p)), use_bias=False,
                    kernel_init=torch_conv_init(), name="conv")(jax.nn.relu(x))
        return BatchNorm(not train, self.affine, self.momentum, name="bn")(x)


class SearchCell(nn.Module):
    """One NB201 search cell of width C (C -> C), op weights w[6, 5] an input."""

    affine: bool = False
    bn_momentum: float = 0.9
    mixed_op: str = "fused"

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, train: bool) -> jax.Array:
        nodes: list[Any] = [x] + [0.0] * (nb201.NUM_NODES - 1)
        for src in range(nb201.NUM_NODES - 1):  # node src is complete here
            targets = tuple(range(src + 1, nb201.NUM_NODES))
            if self.mixed_op == "fused":
                out = FusedGroup(targets, src, self.affine, self.bn_momentum,
                                 name=f"from_{src}")(nodes[src], w, train)
                for g, i in enumerate(targets):
                    nodes[i] = nodes[i] + out[g]
                continue
            for i in targets:
                e, h = _edge(i, src), nodes[src]
                edge = (w[e, _COL["skip_connect"]] * h
                        + w[e, _COL["avg_pool_3x3"]] * avg_pool_3x3(h, 1))
                for name, k in _CONVS:
                    y = ReLUConvBN(h.shape[-1], k, 1, self.affine, self.bn_momentum,
                                   name=f"edge{i}_{src}_{name}")(h, train)
                    edge = edge + w[e, _COL[name]] * y
                nodes[i] = nodes[i] + edge
        return nodes[-1]


class _ScanCell(nn.Module):
    """`SearchCell` as a scan body: (x, w) -> (next x, None)."""

    affine: bool
    bn_momentum: float
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> tuple[jax.Array, None]:
        return SearchCell(self.affine, self.bn_momentum, "fused", name="cell")(
            x, w, self.train), None


class ResNetBasicblock(nn.Module):
    """The stride-2 block between stages: ReLU-conv3x3-BN twice plus a 2x2 average
    pool and 1x1 conv shortcut (affine BatchNorm, as in AutoDL's search network)."""

    C_out: int
    bn_momentum: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        m = self.bn_momentum
        h = ReLUConvBN(self.C_out, 3, 2, True, m, name="conv_a")(x, train)
        h = ReLUConvBN(self.C_out, 3, 1, True, m, name="conv_b")(h, train)
        r = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        r = nn.Conv(self.C_out, (1, 1), use_bias=False, kernel_init=torch_conv_init(),
                    name="downsample")(r)
        return r + h


class NB201Supernet(nn.Module):
    """NB201's search network: ``C`` initial channels, ``N`` cells per stage.

    ``apply(variables, images, arch, train)`` -> logits; ``arch`` f32[6, 5] op
    weights or an int[6] path.  ``bn_momentum`` is flax's (new = m * old + (1 - m) *
    batch; 0.9 is PyTorch's 0.1; 0 stores the batch statistics, for recalibration).
    """

    C: int = 16
    N: int = 5
    num_classes: int = 10
    mixed_op: str = "loop"
    affine: bool = False
    bn_momentum: float = 0.9

    primitives = PRIMITIVES  # the op of each column of `arch` (plots read it)

    @property
    def space(self) -> nb201.NB201Space:
        """The space of its paths (one-shot strategies read its choice counts)."""
        return nb201.NB201Space(num_classes=self.num_classes)

    @nn.compact
    def __call__(self, x: jax.Array, arch: jax.Array, train: bool = True) -> jax.Array:
        if self.mixed_op not in MIXED_OPS:
            raise ValueError(f"mixed_op={self.mixed_op!r}: expected one of {MIXED_OPS}")
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"NB201Supernet halves the images twice: height and width "
                             f"must be divisible by 4, got {x.shape[1]}x{x.shape[2]}")
        w = as_weights(arch)
        m, c = self.bn_momentum, self.C
        x = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=torch_conv_init(), name="stem_conv")(x)
        x = BatchNorm(not train, True, m, name="stem_bn")(x)
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage:
                x = ResNetBasicblock(width, m, name=f"reduce{stage}")(x, train)
            if self.mixed_op == "scan":
                scan = nn.scan(_ScanCell, variable_axes={"params": 0, "batch_stats": 0},
                               split_rngs={"params": True}, in_axes=nn.broadcast,
                               length=self.N)
                x, _ = scan(self.affine, m, train, name=f"stage{stage}")(x, w)
            else:
                for n in range(self.N):
                    x = SearchCell(self.affine, m, self.mixed_op,
                                   name=f"stage{stage}_cell{n}")(x, w, train)
        x = jax.nn.relu(BatchNorm(not train, True, m, name="lastact_bn")(x))
        x = x.mean(axis=(1, 2))
        bound = 1.0 / math.sqrt(x.shape[-1])  # PyTorch's nn.Linear bias init

        def bias_init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        return nn.Dense(self.num_classes, kernel_init=torch_conv_init(),
                        bias_init=bias_init, name="classifier")(x)


def uniform_arch(dtype: Any = jnp.float32) -> jax.Array:
    """Equal op weights on every edge (the softmax of all-zero alphas)."""
    return jnp.full((nb201.NUM_EDGES, _NUM_OPS), 1.0 / _NUM_OPS, dtype)


def _cell_network_variables(cell: dict, collection: str, ops: tuple[int, ...],
                            c: int, mixed_op: str, affine: bool) -> dict:
    """One supernet cell's variables -> `InferCell`'s for the path ``ops``."""
    out = {}
    for e, ((i, j), op) in enumerate(zip(nb201.EDGES, ops)):
        name = PRIMITIVES[op]
        if name not in ("nor_conv_1x1", "nor_conv_3x3"):
            continue
        k = 1 if name == "nor_conv_1x1" else 3
        if mixed_op == "loop":
            src = cell[f"edge{i}_{j}_{name}"]
            out[f"edge{i}_{j}"] = src if affine or collection != "params" else {
                "conv": src["conv"], "bn": {"scale": jnp.ones((c,)),
                                            "bias": jnp.zeros((c,))}}
            continue
        group, g, slot = cell[f"from_{j}"], i - j - 1, 0 if k == 1 else 1
        if collection == "params":
            kern = group["conv1"][g][None, None] if k == 1 else group["conv3"][g]
            bn = ({"scale": group["scale"][g, slot], "bias": group["bias"][g, slot]}
                  if affine else {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))})
            out[f"edge{i}_{j}"] = {"conv": {"kernel": kern}, "bn": bn}
        else:
            out[f"edge{i}_{j}"] = {"bn": {"mean": group["bn"]["mean"][g, slot],
                                          "var": group["bn"]["var"][g, slot]}}
    return out


def extract_network_variables(model: NB201Supernet, variables: dict,
                              arch: nb201.NB201Genotype) -> dict:
    """`TinyNetwork(C, N, arch)` variables inherited from supernet ``variables``.

    Non-affine cell BatchNorms become scale 1, bias 0 (the same function).  With a
    one-hot ``arch`` the supernet and the network so built compute the same logits.
    """
    ops = nb201.check_ops(arch.ops)
    out = {}
    for collection, tree in variables.items():
        net = {k: tree[k] for k in ("stem_conv", "stem_bn", "lastact_bn", "classifier")
               if k in tree}
        index = 0  # TinyNetwork numbers cells and blocks in one list
        for stage in range(3):
            c = model.C * 2 ** stage
            if stage:
                net[f"cell{index}"] = tree[f"reduce{stage}"]
                index += 1
            for n in range(model.N):
                if model.mixed_op == "scan":
                    cell = jax.tree.map(lambda a, n=n: a[n], tree[f"stage{stage}"]["cell"])
                else:
                    cell = tree[f"stage{stage}_cell{n}"]
                edges = _cell_network_variables(cell, collection, ops, c,
                                                model.mixed_op, model.affine)
                if edges:  # a cell without convs has no variables
                    net[f"cell{index}"] = edges
                index += 1
        out[collection] = net
    return out
