"""The DARTS cell space behind the space protocol (`jaxnas.spaces.base`).

Its discrete architectures are `genotypes.Genotype`s (two (op, input) edges per node of
a normal and a reduction cell); its continuous ones ``{"normal": f32[E, K], "reduce":
f32[E, K]}``, one row per edge of `cells` and one column per primitive.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from jaxnas.spaces import base, cells, genotypes
from jaxnas.spaces.genotypes import Genotype

CELL_TYPES = ("normal", "reduce")


def random_genotype(rng: np.random.Generator, steps: int,
                    normal_concat: Sequence[int] | None = None,
                    reduce_concat: Sequence[int] | None = None,
                    primitives: Sequence[str] = genotypes.PRIMITIVES) -> Genotype:
    """A uniformly random DARTS genotype, as the DARTS paper's random baseline: for each
    node two distinct inputs and, per input, an op other than ``none``, drawn uniformly.
    Its cells concatenate the given nodes (default: all of them)."""
    ops = [op for op in primitives if op != "none"]

    def cell() -> list[tuple[str, int]]:
        edges = []
        for node in range(steps):
            inputs = sorted(rng.choice(node + 2, size=2, replace=False).tolist())
            edges += [(ops[int(rng.integers(len(ops)))], int(i)) for i in inputs]
        return edges

    every = list(range(2, 2 + steps))
    return genotypes.make(cell(), every if normal_concat is None else normal_concat,
                          cell(), every if reduce_concat is None else reduce_concat)


@dataclasses.dataclass(frozen=True)
class DartsSpace:
    """The DARTS cell space: `steps` intermediate nodes a cell, ops `primitives`.

    `multiplier` is how many of the last nodes a derived cell concatenates (default
    all); `normal_concat` / `reduce_concat`, when given, are the concatenated nodes of
    every architecture this space derives or draws (a searched genotype's own).
    """

    primitives: tuple[str, ...] = genotypes.PRIMITIVES
    steps: int = 4
    multiplier: int | None = None
    normal_concat: tuple[int, ...] | None = None
    reduce_concat: tuple[int, ...] | None = None
    init_scale: float = 1e-3

    name = "darts"

    def __post_init__(self) -> None:
        object.__setattr__(self, "primitives", tuple(self.primitives))
        for f in ("normal_concat", "reduce_concat"):
            if getattr(self, f) is not None:
                object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))

    @property
    def num_edges(self) -> int:
        """Rows of a cell's architecture matrix (14 for 4 steps)."""
        return cells.num_edges(self.steps)

    # ---- the protocol

    def init_arch(self, key: Any) -> dict:
        """DARTS' initial logits: ``init_scale * N(0, 1)`` per cell type, one key each."""
        import jax

        k1, k2 = jax.random.split(key)
        shape = (self.num_edges, len(self.primitives))
        return {"normal": self.init_scale * jax.random.normal(k1, shape),
                "reduce": self.init_scale * jax.random.normal(k2, shape)}

    def derive(self, weights: Mapping[str, Any]) -> Genotype:
        """DARTS' top-2 derivation (`genotypes.derive`) of op weights (softmax ones)."""
        g = genotypes.derive(weights, primitives=self.primitives, steps=self.steps,
                             multiplier=self.multiplier)
        return self._with_concat(g)

    def random(self, key_or_rng: Any, n: int) -> list[Genotype]:
        """`n` genotypes of `random_genotype`, drawn one after the other."""
        n = base.check_count(n)
        rng = base.rng_of(key_or_rng)
        normal, reduce = self._concat()
        return [random_genotype(rng, self.steps, normal, reduce, self.primitives)
                for _ in range(n)]

    def to_json(self, arch: Genotype) -> dict:
        return genotypes.to_json(arch)

    def from_json(self, d: Mapping[str, Any]) -> Genotype:
        return genotypes.from_json(d)

    def describe(self, arch: Genotype) -> str:
        """The DARTS literal ``Genotype(normal=[...], ...)``."""
        return genotypes.to_str(arch)

    def validate(self, arch: Genotype) -> Genotype:
        return genotypes.validate(arch)

    def num_params(self, arch: Genotype, *, channels: int, layers: int,
                   num_classes: int = 10, auxiliary: bool = False) -> int:
        """Parameters of the discrete `NetworkCIFAR` (BatchNorm scale and bias count,
        running statistics do not)."""
        from jaxnas.networks import darts_eval

        return darts_eval.count_parameters(arch, channels, layers, num_classes,
                                           auxiliary)

    def network(self, arch: Genotype, *, num_classes: int, model: Any) -> Any:
        """`NetworkCIFAR` of `arch` (``model``: channels, layers, auxiliary)."""
        from jaxnas.networks.darts_eval import NetworkCIFAR

        return NetworkCIFAR(C=model.channels, num_classes=num_classes,
                            layers=model.layers, auxiliary=model.auxiliary,
                            genotype=genotypes.validate(arch))

    def trainer_options(self, model: Any) -> dict[str, Any]:
        """The auxiliary head's loss weight and the drop-path probability."""
        return {"auxiliary_weight": model.auxiliary_weight,
                "drop_path_prob": model.drop_path_prob}

    def check_data(self, arch: Genotype, *, name: str, num_classes: int,
                   image_shape: Sequence[int]) -> None:
        """Any image shape and class count fit (the network is built for the data)."""

    # ---- the registry's questions

    @classmethod
    def of(cls, arch: Any) -> "DartsSpace | None":
        if not isinstance(arch, Genotype):
            return None
        return cls(steps=len(arch.normal) // 2, normal_concat=arch.normal_concat,
                   reduce_concat=arch.reduce_concat)

    @staticmethod
    def reads_json(obj: Any) -> bool:
        obj = _unwrap(obj)
        if isinstance(obj, str):  # other spaces' string forms are not ours
            return obj.lstrip().startswith("Genotype")
        return isinstance(obj, Mapping) and obj.get("type", "darts") == "darts"

    @staticmethod
    def arch_from_json(obj: Any) -> Genotype:
        obj = _unwrap(obj)
        if isinstance(obj, str):
            return genotypes.from_str(obj)
        return genotypes.from_json(obj)

    @staticmethod
    def parse(spec: str) -> Genotype:
        """A known name, a ``Genotype(...)`` literal or a JSON file (see
        `genotypes.resolve`)."""
        return genotypes.resolve(spec)

    def _concat(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The concatenated nodes of the normal and reduction cells this space makes."""
        m = self.steps if self.multiplier is None else self.multiplier
        every = tuple(range(2 + self.steps - m, 2 + self.steps))
        return self.normal_concat or every, self.reduce_concat or every

    def _with_concat(self, g: Genotype) -> Genotype:
        normal, reduce = self._concat()
        return g._replace(normal_concat=normal, reduce_concat=reduce)


def _unwrap(obj: Any) -> Any:
    """A result file's ``{"genotype": ...}`` -> its genotype."""
    if isinstance(obj, Mapping) and "genotype" in obj:
        return obj["genotype"]
    return obj


base.register("darts", DartsSpace)
