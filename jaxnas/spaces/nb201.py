"""The NAS-Bench-201 cell space (Dong & Yang 2020) behind the space protocol.

A cell has 4 nodes; node ``i`` (1..3) sums one op applied to every earlier node, so a
cell is 6 edges ``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)`` (this order is the
order of the arch string, of NB201's search models and of every array here), each
one of `OPS`.  Its string form is NB201's own,

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

(nodes separated by ``+``, each edge ``op~input``).  A discrete architecture is an
`NB201Genotype` (6 op indices); its ``index`` is the base-5 number of those indices,
the first edge most significant (the order of NB201's ``Structure.gen_all``; the
published benchmark file lists its architectures in another order, which
`jaxnas.tabular` maps onto this one).  Continuous architectures are f32[6, 5] logits.

The discrete network is xautodl's ``TinyNetwork`` (`jaxnas.networks.nb201`); its exact
parameter count is computed here without JAX (`count_params`).  No JAX at import.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from jaxnas.spaces import base

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                        "avg_pool_3x3")
NUM_NODES = 4
# (node, input) of every edge, in the arch string's order.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NUM_NODES)
                                           for j in range(i))
NUM_EDGES = len(EDGES)  # 6
NUM_ARCHS = len(OPS) ** NUM_EDGES  # 15625
# Parameters of each op on a C -> C stride-1 edge (ReLU, conv without bias, affine BN).
_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class NB201Genotype(NamedTuple):
    """A NAS-Bench-201 cell: one op index (into `OPS`) per edge of `EDGES`."""

    ops: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(OPS[o] for o in self.ops)

    @property
    def index(self) -> int:
        """The base-5 number of the op indices, first edge most significant."""
        return int(path_to_index(np.asarray(self.ops)))

    def to_str(self) -> str:
        return to_str(self)


def path_to_index(paths: Any) -> Any:
    """int[..., 6] op indices -> int[...] arch indices (numpy or jax arrays alike)."""
    weights = len(OPS) ** np.arange(NUM_EDGES - 1, -1, -1)
    return (paths * weights).sum(-1)


def index_to_path(index: Any) -> np.ndarray:
    """int[...] arch indices -> int32[..., 6] op indices (numpy)."""
    index = np.asarray(index, np.int64)
    weights = len(OPS) ** np.arange(NUM_EDGES - 1, -1, -1)
    return ((index[..., None] // weights) % len(OPS)).astype(np.int32)


def check_ops(ops: Sequence[int]) -> tuple[int, ...]:
    """The op indices as a tuple of ints, after checking their number and range."""
    values = tuple(int(v) for v in np.asarray(ops).reshape(-1))
    if len(values) != NUM_EDGES or not all(0 <= v < len(OPS) for v in values):
        raise ValueError(f"an NB201 cell needs {NUM_EDGES} op indices in "
                         f"[0, {len(OPS)}), got {list(values)}")
    return values


def to_str(arch: NB201Genotype) -> str:
    """NB201's arch string of a cell."""
    names = arch.names
    nodes, e = [], 0
    for i in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{names[e + j]}~{j}" for j in range(i)) + "|")
        e += i
    return "+".join(nodes)


def from_str(text: str) -> NB201Genotype:
    """Parses NB201's arch string exactly (edges in the canonical order, no spaces
    inside); ValueError naming the character position and what was expected."""
    if not isinstance(text, str):
        raise ValueError(f"an NB201 arch string must be a str, got "
                         f"{type(text).__name__}")
    s = text.strip()
    pos = 0

    def fail(expected: str, token: str | None = None) -> None:
        got = (repr(token) if token else repr(s[pos]) if pos < len(s)
               else "the end of the string")
        raise ValueError(f"NB201 arch string {s!r}: at position {pos} expected "
                         f"{expected}, got {got}")

    def take(char: str, expected: str) -> None:
        nonlocal pos
        if pos >= len(s) or s[pos] != char:
            fail(expected)
        pos += 1

    ops = []
    for i in range(1, NUM_NODES):
        if i > 1:
            take("+", f"'+' before node {i} (node {i - 1} has {i - 1} "
                           f"edge{'s' if i > 2 else ''})")
        take("|", f"'|' opening node {i}")
        for j in range(i):
            end = pos
            while end < len(s) and s[end] not in "~|+":
                end += 1
            if s[pos:end] not in OPS:
                fail(f"the op of edge {j}->{i} (one of {', '.join(OPS)})", s[pos:end])
            name, pos = s[pos:end], end
            take("~", f"'~' after the op {name}")
            end = pos
            while end < len(s) and s[end].isdigit():
                end += 1
            if s[pos:end] != str(j):
                fail(f"input node {j} of node {i} (its edges in the order "
                     f"{', '.join(f'~{k}' for k in range(i))})", s[pos:end])
            pos = end
            take("|", f"'|' after the edge {name}~{j}")
            ops.append(OPS.index(name))
    if pos != len(s):
        fail(f"the end of the string (node {NUM_NODES - 1} is the last node)")
    return NB201Genotype(tuple(ops))


def looks_like_arch_string(spec: Any) -> bool:
    """Whether `spec` is meant as an NB201 arch string (starts with '|')."""
    return isinstance(spec, str) and spec.lstrip().startswith("|")


# ---- the parameter count of the discrete network (xautodl TinyNetwork)

def _conv_bn(c_in: int, c_out: int, k: int) -> int:
    return k * k * c_in * c_out + 2 * c_out


def cell_params(arch: NB201Genotype, channels: int) -> int:
    """Parameters of one cell at width ``channels`` (every edge C -> C, stride 1)."""
    return sum(_conv_bn(channels, channels, _KERNEL[n]) for n in arch.names
               if n in _KERNEL)


def resblock_params(c_in: int, c_out: int) -> int:
    """The stride-2 ResNet basic block: ReLU-conv3x3-BN twice, avg-pool + 1x1 conv."""
    return _conv_bn(c_in, c_out, 3) + _conv_bn(c_out, c_out, 3) + c_in * c_out


def count_params(arch: NB201Genotype, channels: int = 16, layers: int = 5,
                 num_classes: int = 10, in_channels: int = 3) -> int:
    """Exact parameters of TinyNetwork(C=channels, N=layers): stem conv3x3 + BN, three
    stages of ``layers`` cells (C, 2C, 4C) joined by residual blocks, BN, linear
    (BatchNorm scale and bias count, running statistics do not)."""
    c = int(channels)
    if c < 1 or int(layers) < 1 or int(num_classes) < 1:
        raise ValueError(f"channels, layers and num_classes must be positive, got "
                         f"{channels}, {layers}, {num_classes}")
    arch = NB201Genotype(check_ops(arch.ops))
    total = _conv_bn(in_channels, c, 3)
    total += sum(int(layers) * cell_params(arch, w) for w in (c, 2 * c, 4 * c))
    total += resblock_params(c, 2 * c) + resblock_params(2 * c, 4 * c)
    return total + 2 * 4 * c + 4 * c * num_classes + num_classes


# ---- the protocol

def _unwrap(obj: Any) -> Any:
    """A result file's ``{"genotype": ...}`` -> its genotype."""
    if isinstance(obj, Mapping) and "genotype" in obj:
        return obj["genotype"]
    return obj


@dataclasses.dataclass(frozen=True)
class NB201Space:
    """The NAS-Bench-201 cell space: 6 edges x 5 ops, a per-layer choice space.

    `num_classes` is the default classifier width of `num_params`; `init_scale` the
    scale of the initial logits (1e-3 as NB201's DARTS/GDAS).
    """

    num_classes: int = 10
    init_scale: float = 1e-3

    name = "nb201"
    ops = OPS

    num_layers = NUM_EDGES  # a path is one op index per edge (one-shot sampling)

    @property
    def num_choices(self) -> tuple[int, ...]:
        """Per-edge choice counts (6 x 5), for evolution and random search."""
        return (len(OPS),) * NUM_EDGES

    def init_arch(self, key: Any) -> Any:
        """``init_scale * N(0, 1)`` logits f32[6, 5]."""
        import jax

        return self.init_scale * jax.random.normal(key, (NUM_EDGES, len(OPS)))

    def derive(self, weights: Any) -> NB201Genotype:
        """Each edge's strongest op, ``none`` included (the first on ties), as
        NB201's DARTS and GDAS derive their genotype."""
        w = np.asarray(weights)
        if w.shape != (NUM_EDGES, len(OPS)):
            raise ValueError(f"derive: weights have shape {w.shape}, expected "
                             f"({NUM_EDGES}, {len(OPS)})")
        return NB201Genotype(tuple(int(v) for v in np.argmax(w, axis=-1)))

    def random(self, key_or_rng: Any, n: int) -> list[NB201Genotype]:
        """`n` cells with every edge's op drawn uniformly, one cell after the other."""
        n = base.check_count(n)
        rng = base.rng_of(key_or_rng)
        return [NB201Genotype(tuple(int(v) for v in rng.integers(len(OPS),
                                                                  size=NUM_EDGES)))
                for _ in range(n)]

    def to_json(self, arch: NB201Genotype) -> dict:
        arch = self.validate(arch)
        return {"type": "nb201", "arch": to_str(arch), "index": arch.index}

    def from_json(self, d: Mapping[str, Any]) -> NB201Genotype:
        return self.arch_from_json(d)

    def describe(self, arch: NB201Genotype) -> str:
        """NB201's arch string."""
        return to_str(self.validate(arch))

    def validate(self, arch: NB201Genotype) -> NB201Genotype:
        if not isinstance(arch, NB201Genotype):
            raise ValueError(f"not an NB201 cell: {type(arch).__name__}")
        return NB201Genotype(check_ops(arch.ops))

    def num_params(self, arch: NB201Genotype, *, channels: int = 16, layers: int = 5,
                   num_classes: int | None = None, in_channels: int = 3,
                   auxiliary: bool = False) -> int:
        """Parameters of TinyNetwork(C=channels, N=layers cells per stage).
        ``auxiliary`` is accepted so that a caller can pass DARTS' flags through; the
        network has no auxiliary head, so True is refused."""
        if auxiliary:
            raise ValueError("the NB201 network has no auxiliary head")
        return count_params(arch, channels, layers,
                            self.num_classes if num_classes is None else num_classes,
                            in_channels)

    def network(self, arch: NB201Genotype, *, num_classes: int, model: Any) -> Any:
        """`jaxnas.networks.nb201.TinyNetwork` (``model``: channels, layers = N cells
        per stage)."""
        from jaxnas.networks.nb201 import TinyNetwork

        return TinyNetwork(C=model.channels, N=model.layers,
                           genotype=self.validate(arch), num_classes=num_classes)

    def trainer_options(self, model: Any) -> dict[str, Any]:
        """None: no auxiliary head, no drop path."""
        return {}

    def check_data(self, arch: NB201Genotype, *, name: str, num_classes: int,
                   image_shape: Sequence[int]) -> None:
        """Any channel count and class count fit; two stride-2 blocks need 2x2."""
        if min(image_shape[:2]) < 2:
            raise ValueError(f"the NB201 network halves the images twice, but {name} "
                             f"has {tuple(image_shape[:2])} images")

    # ---- the registry's questions

    @classmethod
    def of(cls, arch: Any) -> "NB201Space | None":
        return cls() if isinstance(arch, NB201Genotype) else None

    @staticmethod
    def reads_json(obj: Any) -> bool:
        """``{"type": "nb201", ...}`` or a well-formed arch string (a malformed one is
        left to no space, so that its JSON is reported as nobody's)."""
        obj = _unwrap(obj)
        if isinstance(obj, Mapping):
            return obj.get("type") == "nb201"
        if looks_like_arch_string(obj):
            try:
                from_str(obj)
            except ValueError:
                return False
            return True
        return False

    @staticmethod
    def arch_from_json(obj: Any) -> NB201Genotype:
        obj = _unwrap(obj)
        if isinstance(obj, str):
            return from_str(obj)
        if not (isinstance(obj, Mapping) and obj.get("type") == "nb201"
                and "arch" in obj):
            raise ValueError(f"malformed NB201 genotype {str(obj)[:80]}: expected "
                             "{'type': 'nb201', 'arch': '|op~0|+...'}")
        arch = from_str(obj["arch"])
        if "index" in obj and int(obj["index"]) != arch.index:
            raise ValueError(f"NB201 genotype: index {obj['index']} disagrees with its "
                             f"arch string (index {arch.index})")
        return arch

    @staticmethod
    def parse(spec: str) -> NB201Genotype | None:
        """An arch string ``|op~0|+|...|`` (None for any other spec)."""
        return from_str(spec) if looks_like_arch_string(spec) else None


base.register("nb201", NB201Space)
