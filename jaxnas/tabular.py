"""Tabular NAS-Bench-201 look-ups: a compact portable table, queries by arch string
or by a batch of op-index paths (jittable), and the one-time converter of NB201's
published torch file.

A `Table` holds named metrics, each float32[15625] indexed by the arch index of
`jaxnas.spaces.nb201` (base 5 over the 6 edges in the arch string's order, first edge
most significant), NaN where the table has no entry.  On disk it is one ``.npz``
(readable by any numpy, no pickle): ``metadata`` is a JSON string (format, op names,
metric names, source) and ``metric_<k>`` the k-th metric's array.

`Table.fitness_fn(metric)` is ``int32[P, 6] -> float32[P]``: one gather from a
constant array, so `jaxnas.strategies.evolution.regularized_evolution` and
`random_search` evaluate a whole population in one jitted call.

NB201's file (``NAS-Bench-201-v1_1-096897.pth``, 4.7 GB) needs torch to read: torch
is an optional extra, imported only by `convert_nb201` when given a path.  The metric
names it writes are ``"<dataset>/<set>"`` (top-1 accuracy in percent, the mean over
the trials' seeds after the last epoch, as NB201's ``get_metrics(is_random=False)``),
e.g. ``"cifar10-valid/x-valid"``, ``"cifar10/ori-test"``, ``"cifar100/x-test"``,
plus ``"<dataset>/train"``, ``"<dataset>/params"`` and ``"<dataset>/flops"``
(millions); the NB201 API's short names (``"cifar10/test"``, ``"cifar100/valid"``,
...) are accepted as aliases.  No JAX at import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from jaxnas.spaces import nb201

FORMAT = "jaxnas-nb201-table/1"

# NB201 API short names -> the stored (dataset, set) names (its remap_dataset_set_names)
ALIASES = {
    "cifar10/valid": "cifar10-valid/x-valid",
    "cifar10/test": "cifar10/ori-test",
    "cifar100/valid": "cifar100/x-valid",
    "cifar100/test": "cifar100/x-test",
    "ImageNet16-120/valid": "ImageNet16-120/x-valid",
    "ImageNet16-120/test": "ImageNet16-120/x-test",
}
# NB201's two training schedules: hp "200" is the record's 'full' entry, "12" 'less'.
_HP_KEYS = {"200": "full", "12": "less"}


def _arch_index(arch: Any) -> int:
    """The arch index of an arch string, an `NB201Genotype`, 6 op indices or an int."""
    if isinstance(arch, str):
        return nb201.from_str(arch).index
    if isinstance(arch, nb201.NB201Genotype):
        return nb201.NB201Space().validate(arch).index
    if isinstance(arch, (int, np.integer)) and not isinstance(arch, bool):
        if not 0 <= int(arch) < nb201.NUM_ARCHS:
            raise ValueError(f"arch index {arch} out of [0, {nb201.NUM_ARCHS})")
        return int(arch)
    return nb201.NB201Genotype(nb201.check_ops(arch)).index


@dataclasses.dataclass(frozen=True)
class Table:
    """Named metrics over the 15625 NB201 cells (float32[15625] each, NaN: missing)."""

    metrics: Mapping[str, np.ndarray]
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        metrics = {}
        for name, values in self.metrics.items():
            values = np.asarray(values, np.float32)
            if values.shape != (nb201.NUM_ARCHS,):
                raise ValueError(f"metric {name!r}: expected shape "
                                 f"({nb201.NUM_ARCHS},), "
                                 f"got {values.shape}")
            metrics[str(name)] = values
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "meta", dict(self.meta))

    # ---- building

    @classmethod
    def from_records(cls, records: Mapping[Any, Mapping[str, float]] |
                     Iterable[tuple[Any, Mapping[str, float]]],
                     meta: Mapping[str, Any] | None = None) -> "Table":
        """A table from ``{arch: {metric: value}}`` (arch: a string, genotype, op
        indices or arch index); metrics an arch lacks stay NaN."""
        items = records.items() if isinstance(records, Mapping) else records
        metrics: dict[str, np.ndarray] = {}
        for arch, values in items:
            i = _arch_index(arch)
            for name, v in values.items():
                if name not in metrics:
                    metrics[name] = np.full(nb201.NUM_ARCHS, np.nan, np.float32)
                metrics[name][i] = np.nan if v is None else float(v)
        return cls(metrics, meta or {})

    # ---- queries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    def values(self, metric: str) -> np.ndarray:
        """float32[15625] of `metric` (a stored name or an NB201 alias)."""
        name = metric if metric in self.metrics else ALIASES.get(metric, metric)
        if name not in self.metrics:
            raise ValueError(f"the table has no metric {metric!r}: it has "
                             f"{', '.join(self.metrics) or 'none'}")
        return self.metrics[name]

    def query(self, arch: Any, metric: str) -> float:
        """One value (NaN when missing); `arch` as in `from_records`."""
        return float(self.values(metric)[_arch_index(arch)])

    def query_paths(self, paths: Any, metric: str) -> np.ndarray:
        """float32[...] for int[..., 6] op-index paths (numpy)."""
        paths = np.asarray(paths)
        if paths.shape[-1:] != (nb201.NUM_EDGES,) or paths.min(initial=0) < 0 or \
                paths.max(initial=0) >= len(nb201.OPS):
            raise ValueError(f"paths: expected int[..., {nb201.NUM_EDGES}] in "
                             f"[0, {len(nb201.OPS)}), got shape {paths.shape}")
        return self.values(metric)[nb201.path_to_index(paths.astype(np.int64))]

    def fitness_fn(self, metric: str) -> Callable[[Any], Any]:
        """Pure, jittable ``int32[P, 6] -> float32[P]`` (NaN where missing; evolution
        treats NaN as -inf).  One array constant and one gather: call it once per
        population.  Reuse the returned function to reuse compilations."""
        import jax.numpy as jnp

        table = jnp.asarray(self.values(metric))
        weights = tuple(int(w) for w in len(nb201.OPS) ** np.arange(nb201.NUM_EDGES - 1,
                                                                     -1, -1))

        def fitness(paths):
            paths = jnp.asarray(paths, jnp.int32)
            index = sum(paths[..., e] * w for e, w in enumerate(weights))
            # an out-of-range op would alias another cell: NaN instead
            ok = jnp.all((paths >= 0) & (paths < len(nb201.OPS)), axis=-1)
            return jnp.where(ok, table[jnp.where(ok, index, 0)], jnp.nan)

        return fitness

    def best(self, metric: str) -> tuple[nb201.NB201Genotype, float]:
        """The cell with the largest value (the first of the maxima; NaN ignored)."""
        v = self.values(metric)
        if np.all(np.isnan(v)):
            raise ValueError(f"metric {metric!r} has no entries")
        i = int(np.nanargmax(v))
        return nb201.NB201Genotype(tuple(int(o) for o in nb201.index_to_path(i))), \
            float(v[i])

    # ---- files

    def save(self, path: str) -> str:
        """Writes the ``.npz`` (compressed); returns the path written."""
        names = list(self.metrics)
        metadata = {"format": FORMAT, "ops": list(nb201.OPS),
                    "edges": [list(e) for e in nb201.EDGES],
                    "index": "base 5 over the edges in arch-string order, first edge "
                             "most significant",
                    "metrics": names, "meta": self.meta}
        arrays = {f"metric_{k}": self.metrics[n] for k, n in enumerate(names)}
        with open(path, "wb") as f:
            np.savez_compressed(f, metadata=np.array(json.dumps(metadata)), **arrays)
        return path

    @classmethod
    def load(cls, path: str) -> "Table":
        """Reads a table written by `save`; ValueError naming what does not fit."""
        with np.load(path, allow_pickle=False) as z:
            if "metadata" not in z.files:
                raise ValueError(f"{path}: not a jaxnas NB201 table (no metadata)")
            metadata = json.loads(str(z["metadata"]))
            if metadata.get("format") != FORMAT:
                raise ValueError(f"{path}: table format {metadata.get('format')!r}, "
                                 f"expected {FORMAT!r}")
            if tuple(metadata.get("ops", ())) != nb201.OPS:
                raise ValueError(f"{path}: op order {metadata.get('ops')} differs from "
                                 f"{list(nb201.OPS)}")
            metrics = {n: z[f"metric_{k}"] for k, n in enumerate(metadata["metrics"])}
        return cls(metrics, metadata.get("meta", {}))


# ---- NB201's published file

def _mean(values: list) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def records_from_nb201(data: Mapping[str, Any], hp: str = "200"
                       ) -> dict[int, dict[str, float]]:
    """``{arch index: {metric: value}}`` from NB201's loaded file (a plain dict:
    ``meta_archs``, ``arch2infos[i]["full" | "less"]`` = an ``ArchResults`` state
    dict with ``all_results[(dataset, seed)]`` = a ``ResultsCount`` state dict).

    Per dataset, accuracies are the mean over its seeds after the last epoch; the
    arch index is this package's (NB201's own numbering is a different order)."""
    if hp not in _HP_KEYS:
        raise ValueError(f"hp: expected one of {', '.join(_HP_KEYS)}, got {hp!r}")
    for key in ("meta_archs", "arch2infos"):
        if key not in data:
            raise ValueError(f"not an NB201 benchmark dict: no {key!r} "
                             f"(keys: {', '.join(map(str, data))})")
    out: dict[int, dict[str, float]] = {}
    for nb_index, infos in data["arch2infos"].items():
        arch_str = data["meta_archs"][int(nb_index)]
        record = infos[_HP_KEYS[hp]]
        if record.get("arch_str", arch_str) != arch_str:
            raise ValueError(f"NB201 record {nb_index}: arch_str "
                             f"{record['arch_str']!r} "
                             f"differs from meta_archs[{nb_index}] {arch_str!r}")
        metrics: dict[str, float] = {}
        for dataset, seeds in record["dataset_seed"].items():
            trials = [record["all_results"][(dataset, seed)] for seed in seeds]
            last = [t["epochs"] - 1 for t in trials]
            sets = sorted({k.rsplit("@", 1)[0] for t in trials
                           for k in t["eval_acc1es"]})
            for s in sets:
                metrics[f"{dataset}/{s}"] = _mean(
                    [t["eval_acc1es"].get(f"{s}@{e}") for t, e in zip(trials, last)])
            metrics[f"{dataset}/train"] = _mean(
                [t["train_acc1es"].get(e) for t, e in zip(trials, last)])
            metrics[f"{dataset}/params"] = _mean([t.get("params") for t in trials])
            metrics[f"{dataset}/flops"] = _mean([t.get("flop") for t in trials])
        out[nb201.from_str(arch_str).index] = metrics
    return out


def convert_nb201(source: str | Mapping[str, Any], out_path: str, *,
                  hp: str = "200") -> Table:
    """One-time conversion of NB201's benchmark file (a path, read with torch, or
    the dict it holds) into a `Table` saved at `out_path`."""
    if isinstance(source, (str, os.PathLike)):
        try:
            import torch  # the optional extra: only this conversion needs it
        except ImportError:
            raise ImportError("reading NB201's .pth file needs torch (an optional "
                              "extra: pip install torch), once; the converted table "
                              "does not") from None
        data = torch.load(str(source), map_location="cpu", weights_only=False)
        name = os.path.basename(str(source))
    else:
        data, name = source, "dict"
    table = Table.from_records(records_from_nb201(data, hp),
                               {"source": name, "hp": hp,
                                "aggregate": "mean over seeds, last epoch"})
    table.save(out_path)
    return table


def lookup_throughput(population: int = 1 << 20, repeats: int = 20,
                      seed: int = 0) -> dict[str, float]:
    """Queries per second of the jitted `Table.fitness_fn` on a random table and
    random paths (median over `repeats` calls after a warm-up)."""
    import jax

    rng = np.random.default_rng(seed)
    table = Table({"acc": rng.random(nb201.NUM_ARCHS).astype(np.float32)})
    fitness = jax.jit(table.fitness_fn("acc"))
    paths = jax.device_put(rng.integers(0, len(nb201.OPS),
                                        (population, nb201.NUM_EDGES), dtype=np.int32))
    expected = table.query_paths(np.asarray(paths), "acc")
    out = fitness(paths).block_until_ready()
    np.testing.assert_array_equal(np.asarray(out), expected)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fitness(paths).block_until_ready()
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    return {"population": population, "median_s": median,
            "queries_per_s": population / median, "device": str(jax.devices()[0])}
