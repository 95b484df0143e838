"""The chain search space: a MobileNetV2-style stack of inverted-residual choice blocks.

As in FairNAS (Chu et al. 2019) and ProxylessNAS (Cai et al. 2019), every searchable
layer picks one of `CHOICES`, the six inverted-residual ("MBConv") blocks with
depthwise kernel 3, 5 or 7 and expansion 3 or 6.  A *path* is one choice index per
searchable layer (int32[L]); the network is

  stem: conv3x3(stride) - BN - ReLU6
  L searchable layers: inverted residual (expand 1x1 - BN - ReLU6, depthwise kxk -
      BN - ReLU6, project 1x1 - BN), with a residual connection when the stride is
      1 and the widths agree
  head: conv1x1 - BN - ReLU6, global average pool, dense classifier.

Convolutions have no bias; BatchNorm scale and bias count as parameters, running
statistics do not.  This module is pure Python/numpy (no flax): it describes the
space, its layers and the exact parameter count of any path.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from jaxnas.spaces import base


class Choice(NamedTuple):
    """One candidate block: depthwise kernel size and expansion ratio."""

    kernel: int
    expansion: int

    @property
    def name(self) -> str:
        return f"mb_k{self.kernel}_e{self.expansion}"


# The FairNAS / ProxylessNAS candidates, in a fixed order (path values index this).
CHOICES: tuple[Choice, ...] = tuple(Choice(k, e) for k in (3, 5, 7) for e in (3, 6))
CHOICE_NAMES: tuple[str, ...] = tuple(c.name for c in CHOICES)
MAX_KERNEL = max(c.kernel for c in CHOICES)
MAX_EXPANSION = max(c.expansion for c in CHOICES)


class LayerSpec(NamedTuple):
    """A searchable layer: input and output widths, stride of its depthwise conv."""

    in_channels: int
    out_channels: int
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclasses.dataclass(frozen=True)
class ChainSpace:
    """A chain space: stem, stages of searchable layers, head.

    Stage ``s`` has ``depths[s]`` searchable layers of output width ``widths[s]``;
    its first layer has stride ``strides[s]``, the others stride 1.
    """

    stem_channels: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    strides: tuple[int, ...]
    head_channels: int
    stem_stride: int = 1
    in_channels: int = 3

    def __post_init__(self) -> None:
        widths, depths, strides = (tuple(int(v) for v in t)
                                   for t in (self.widths, self.depths, self.strides))
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "strides", strides)
        if not len(widths) == len(depths) == len(strides) >= 1:
            raise ValueError(f"widths, depths and strides need one entry per stage, "
                             f"got {widths}, {depths}, {strides}")
        if min(widths) < 1 or min(depths) < 1 or sum(depths) < 1:
            raise ValueError(f"widths and depths must be positive, got {widths}, "
                             f"{depths}")
        if any(s not in (1, 2) for s in strides + (self.stem_stride,)):
            raise ValueError(f"strides must be 1 or 2, got stem {self.stem_stride}, "
                             f"stages {strides}")
        for name in ("stem_channels", "head_channels", "in_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def num_layers(self) -> int:
        """Number of searchable layers ``L``."""
        return sum(self.depths)

    @property
    def num_choices(self) -> tuple[int, ...]:
        """Per-layer choice counts (the `regularized_evolution` argument)."""
        return (len(CHOICES),) * self.num_layers

    def layers(self) -> tuple[LayerSpec, ...]:
        """The searchable layers in order."""
        out, c_in = [], self.stem_channels
        for width, depth, stride in zip(self.widths, self.depths, self.strides):
            for i in range(depth):
                out.append(LayerSpec(c_in, width, stride if i == 0 else 1))
                c_in = width
        return tuple(out)

    def output_size(self, size: int) -> int:
        """Spatial size after the stem and all stages for an input of ``size``."""
        for s in (self.stem_stride,) + self.strides:
            size = (size - 1) // s + 1
        return size

    def to_dict(self) -> dict:
        """JSON-native fields (lists, not tuples), so a decoded copy compares equal."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def cifar_space(in_channels: int = 3) -> ChainSpace:
    """The CIFAR-sized default: MobileNetV2/FairNAS widths, 16 searchable layers.

    32x32 input, stem stride 1, three stride-2 stages (32 -> 16 -> 8 -> 4), head 1280.
    """
    return ChainSpace(stem_channels=32, widths=(24, 32, 64, 96, 160, 320),
                      depths=(2, 3, 4, 3, 3, 1), strides=(1, 2, 2, 1, 2, 1),
                      head_channels=1280, stem_stride=1, in_channels=in_channels)


def digits_space(in_channels: int = 1) -> ChainSpace:
    """A small space for 8x8x1 digits: 6 searchable layers (8 -> 4 -> 2), head 64."""
    return ChainSpace(stem_channels=8, widths=(8, 16, 24), depths=(2, 2, 2),
                      strides=(1, 2, 2), head_channels=64, stem_stride=1,
                      in_channels=in_channels)


SPACES = {"cifar": cifar_space, "digits": digits_space}


def block_params(in_channels: int, out_channels: int, choice: Choice) -> int:
    """Exact parameter count of one inverted-residual block.

    expand 1x1 (``c_in * h``), BN (``2h``), depthwise (``k^2 h``), BN (``2h``),
    project 1x1 (``h * c_out``), BN (``2 c_out``), with ``h = e * c_in``.
    """
    hidden = choice.expansion * in_channels
    return (in_channels * hidden + 2 * hidden + choice.kernel ** 2 * hidden
            + 2 * hidden + hidden * out_channels + 2 * out_channels)


def param_table(space: ChainSpace, num_classes: int) -> tuple[int, np.ndarray]:
    """``(fixed, table)``: a path's parameter count is ``fixed + sum_l table[l, p_l]``.

    ``fixed`` counts the stem, head and classifier; ``table`` is int64[L, K] with the
    count of each choice of each searchable layer.
    """
    stem = 9 * space.in_channels * space.stem_channels + 2 * space.stem_channels
    last = space.widths[-1]
    head = last * space.head_channels + 2 * space.head_channels
    classifier = space.head_channels * num_classes + num_classes
    table = np.array([[block_params(l.in_channels, l.out_channels, c) for c in CHOICES]
                      for l in space.layers()], np.int64)
    return stem + head + classifier, table


def check_path(space: ChainSpace, path: Sequence[int]) -> tuple[int, ...]:
    """The path as a tuple of ints, after checking its length and values."""
    values = tuple(int(v) for v in np.asarray(path).reshape(-1))
    k = len(CHOICES)
    if len(values) != space.num_layers or not all(0 <= v < k for v in values):
        raise ValueError(f"a path needs {space.num_layers} choice indices in "
                         f"[0, {k}), got {list(values)}")
    return values


def count_params(space: ChainSpace, path: Sequence[int], num_classes: int) -> int:
    """Exact parameter count of the discrete network a path selects."""
    fixed, table = param_table(space, num_classes)
    values = check_path(space, path)
    return int(fixed + sum(table[l, c] for l, c in enumerate(values)))


def path_names(path: Sequence[int]) -> list[str]:
    """Block names of a path, e.g. ``['mb_k3_e6', ...]``."""
    return [CHOICE_NAMES[int(c)] for c in np.asarray(path).reshape(-1)]


def genotype_to_json(space: ChainSpace, path: Sequence[int],
                     num_classes: int) -> dict:
    """A chain-space genotype as JSON: enough to rebuild and retrain the network."""
    values = check_path(space, path)
    return {"type": "chain", "path": list(values), "names": path_names(values),
            "space": space.to_dict(), "num_classes": int(num_classes),
            "params": count_params(space, values, num_classes)}


def genotype_from_json(obj: dict) -> tuple[ChainSpace, tuple[int, ...], int]:
    """``(space, path, num_classes)`` of `genotype_to_json` output (or of a
    genotype.json written by a SPOS / FairNAS search, via its ``genotype`` key)."""
    if "genotype" in obj and isinstance(obj["genotype"], dict):
        obj = obj["genotype"]
    if obj.get("type") != "chain":
        raise ValueError(f"not a chain-space genotype (type={obj.get('type')!r})")
    fields = dict(obj["space"])
    for name in ("widths", "depths", "strides"):
        fields[name] = tuple(fields[name])
    space = ChainSpace(**fields)
    return space, check_path(space, obj["path"]), int(obj["num_classes"])


class ChainGenotype(NamedTuple):
    """A discrete chain-space architecture: the space, one choice per layer, classes."""

    space: ChainSpace
    path: tuple[int, ...]
    num_classes: int

    def to_json(self) -> dict:
        return genotype_to_json(self.space, self.path, self.num_classes)

    def describe(self) -> str:
        """``mb_k3_e6 mb_k7_e3 ...`` (one block name per searchable layer)."""
        return " ".join(path_names(self.path))


def is_chain_json(obj) -> bool:
    """Whether a decoded JSON object is (or wraps, under "genotype") a chain genotype."""
    if isinstance(obj, dict) and isinstance(obj.get("genotype"), dict):
        obj = obj["genotype"]
    return isinstance(obj, dict) and obj.get("type") == "chain"


def chain_genotype_from_json(obj: dict) -> ChainGenotype:
    """`genotype_from_json` as a `ChainGenotype`; ValueError naming what is wrong."""
    try:
        return ChainGenotype(*genotype_from_json(obj))
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed chain genotype ({type(e).__name__}: {e}); "
                         "expected keys type, path, space, num_classes") from None


@dataclasses.dataclass(frozen=True)
class ChainSearchSpace:
    """The chain space behind the space protocol (`jaxnas.spaces.base`).

    `space` is the geometry (a `ChainSpace` or a name of `SPACES`), `num_classes` the
    classifier's width.  Discrete architectures are `ChainGenotype`s; continuous ones
    f32[L, K] logits, one row per searchable layer.
    """

    space: ChainSpace | str = "cifar"
    num_classes: int = 10
    init_scale: float = 1e-3

    name = "chain"

    def __post_init__(self) -> None:
        if isinstance(self.space, str):
            if self.space not in SPACES:
                raise ValueError(f"unknown chain space {self.space!r}: expected one of "
                                 f"{', '.join(SPACES)} or a ChainSpace")
            object.__setattr__(self, "space", SPACES[self.space]())

    @property
    def num_choices(self) -> tuple[int, ...]:
        """Per-layer choice counts."""
        return self.space.num_choices

    def init_arch(self, key: Any) -> Any:
        """``init_scale * N(0, 1)`` logits f32[L, K]."""
        import jax

        shape = (self.space.num_layers, max(self.num_choices))
        return self.init_scale * jax.random.normal(key, shape)

    def derive(self, weights: Any) -> ChainGenotype:
        """Each layer's strongest choice (the first, on ties)."""
        w = np.asarray(weights)
        if w.shape != (self.space.num_layers, max(self.num_choices)):
            raise ValueError(f"derive: weights have shape {w.shape}, expected "
                             f"({self.space.num_layers}, {max(self.num_choices)})")
        return self.validate(ChainGenotype(self.space, tuple(np.argmax(w, axis=-1)),
                                           self.num_classes))

    def random(self, key_or_rng: Any, n: int) -> list[ChainGenotype]:
        """`n` paths with every layer's choice drawn uniformly, one after the other."""
        n = base.check_count(n)
        rng = base.rng_of(key_or_rng)
        k, layers = max(self.num_choices), self.space.num_layers
        return [ChainGenotype(self.space,
                              tuple(int(c) for c in rng.integers(k, size=layers)),
                              self.num_classes) for _ in range(n)]

    def to_json(self, arch: ChainGenotype) -> dict:
        return arch.to_json()

    def from_json(self, d: Mapping[str, Any]) -> ChainGenotype:
        return chain_genotype_from_json(dict(d))

    def describe(self, arch: ChainGenotype) -> str:
        """``mb_k3_e6 mb_k7_e3 ...`` (one block name per searchable layer)."""
        return arch.describe()

    def validate(self, arch: ChainGenotype) -> ChainGenotype:
        return arch._replace(path=check_path(arch.space, arch.path),
                             num_classes=int(arch.num_classes))

    def num_params(self, arch: ChainGenotype, *, num_classes: int | None = None,
                   channels: int | None = None, layers: int | None = None,
                   auxiliary: bool = False) -> int:
        """Exact parameters of the path's discrete network (`count_params`).

        A chain genotype fixes its own widths and depth: ``channels`` (the stem width)
        and ``layers`` (searchable layers) are accepted so that callers can pass DARTS'
        sizes through, and refused when they disagree with the genotype."""
        if auxiliary:
            raise ValueError("the chain network has no auxiliary head")
        for name, given, own in (("channels", channels, arch.space.stem_channels),
                                 ("layers", layers, arch.space.num_layers)):
            if given is not None and int(given) != own:
                raise ValueError(f"this chain genotype has {name} = {own} (its space "
                                 f"fixes it), got {given}")
        return count_params(arch.space, arch.path,
                            arch.num_classes if num_classes is None else num_classes)

    def network(self, arch: ChainGenotype, *, num_classes: int, model: Any) -> Any:
        """The discrete `jaxnas.networks.chain.ChainNet` (``model``: bn_momentum)."""
        from jaxnas.networks.chain import build_path_network

        return build_path_network(arch.space, arch.path, num_classes,
                                  bn_momentum=model.bn_momentum)

    def trainer_options(self, model: Any) -> dict[str, Any]:
        """None: no auxiliary head, no drop path."""
        return {}

    def check_data(self, arch: ChainGenotype, *, name: str, num_classes: int,
                   image_shape: Sequence[int]) -> None:
        """A chain genotype records its input channels and classes: they must match."""
        if arch.space.in_channels != image_shape[-1]:
            raise ValueError(f"the chain genotype takes {arch.space.in_channels}-channel "
                             f"images, but {name} has {image_shape[-1]}")
        if arch.num_classes != num_classes:
            raise ValueError(f"the chain genotype has {arch.num_classes} classes, but "
                             f"{name} has {num_classes}")

    @classmethod
    def of(cls, arch: Any) -> "ChainSearchSpace | None":
        if not isinstance(arch, ChainGenotype):
            return None
        return cls(arch.space, arch.num_classes)

    @staticmethod
    def reads_json(obj: Any) -> bool:
        return is_chain_json(obj)

    @staticmethod
    def arch_from_json(obj: Any) -> ChainGenotype:
        return chain_genotype_from_json(obj)


base.register("chain", ChainSearchSpace)
