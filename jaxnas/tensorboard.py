"""TensorBoard event files beside metrics.jsonl, written by tensorboardX (no TensorFlow)
at the edge of the loop: every record the loop logs, with the same steps and values.

* Tags: `train_loss` -> `train/loss`, `val_accuracy` -> `val/accuracy`, `test_*` ->
  `test/*` (TensorBoard groups charts by the part before the first `/`); learning
  rates and gradient norms (`lr`, `*_norm`) under `optim/`; other numbers under their
  own key; nested records (a study's probes) with their keys joined by `/`.
* Op weights (`arch_weights`): one scalar per op of every edge,
  `arch/<cell>/<edge>/<op>` (edges named `n2_from_c_k-1`, node from input, as the
  plots name them), and a Custom Scalars layout with one chart per edge holding its ops'
  lines. Scalars rather than a histogram per edge: a histogram of an edge's 8 weights
  loses which op has which weight, which is the whole point of watching them.
* Resuming: the loop continues from checkpoint step S and drops later records from
  metrics.jsonl; here the new event file starts with a `SessionLog.START` at step
  S + 1 (tensorboardX's `purge_step`), on which TensorBoard discards every earlier
  event at step >= S + 1, so the points a killed session logged after its last
  checkpoint disappear instead of standing beside the repeated steps. Each session
  writes its own file, named so that TensorBoard reads them in session order.
* `config.tensorboard = False` turns it off (default on: a few scalars per logged
  step, written by a background thread).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

import numpy as np

from jaxnas import workdir as wd

log = logging.getLogger("jaxnas")

_SPLITS = ("train", "val", "test")


def enabled(config: Any) -> bool:
    """`config.tensorboard`, true when absent (configs written before the switch)."""
    return bool(config.get("tensorboard", True))


def tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key."""
    head, sep, rest = key.partition("_")
    if sep and head in _SPLITS:
        return f"{head}/{rest}"
    if key == "lr" or key.endswith("_lr") or key.endswith("_norm"):
        return f"optim/{key}"
    return key


def edge_names(num_edges: int) -> list[str]:
    """`jaxnas.plots.edge_labels` in characters TensorBoard keeps in a tag."""
    from jaxnas.plots import edge_labels

    return [label.replace(" <- ", "_from_").replace(" ", "_").replace("[", "_")
            .replace("]", "") for label in edge_labels(num_edges)]


def op_names_of(config: Any) -> tuple[str, ...] | None:
    """The op of each column of a bilevel search's op weights, or None."""
    model = config.get("model")
    if model is None or "darts" not in config:  # bilevel methods have a darts section
        return None
    space = model.get("space", "darts")
    if space == "darts":
        from jaxnas.spaces.genotypes import PRIMITIVES
        return tuple(PRIMITIVES)
    if space == "nb201":
        from jaxnas.supernet.nb201 import PRIMITIVES
        return tuple(PRIMITIVES)
    return None


def _number(value: Any) -> float | None:
    """A real number as float (numpy scalars and 0-d arrays too); None otherwise."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float,
                                                                       np.number)):
        return None
    if isinstance(value, np.complexfloating):
        return None
    return float(value)


def arch_scalars(weights: Any, op_names: Sequence[str] | None = None
                 ) -> dict[str, dict[str, dict[str, float]]]:
    """{cell: {edge: {op: weight}}} of a record's `arch_weights` ({cell: [E][K]} for
    DARTS, [E][K] for one cell type, named `cell`); {} for anything else."""
    cells = weights if isinstance(weights, Mapping) else {"cell": weights}
    out = {}
    for cell, rows in cells.items():
        try:  # nested lists (metrics.jsonl) or arrays (the loop's records)
            rows = np.asarray(rows, np.float64)
        except (TypeError, ValueError):
            return {}
        if rows.ndim != 2 or rows.size == 0:
            return {}
        k = rows.shape[1]
        ops = (list(op_names) if op_names is not None and len(op_names) == k
               else [f"op{i}" for i in range(k)])
        out[str(cell)] = {edge: {op: float(v) for op, v in zip(ops, row)}
                          for edge, row in zip(edge_names(len(rows)), rows)}
    return out


def scalars(record: Mapping[str, Any], op_names: Sequence[str] | None = None
            ) -> dict[str, float]:
    """Every number of a metrics.jsonl record by tag (`step` and `time` excluded)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "time"):
            continue
        if key == "arch_weights":
            for cell, edges in arch_scalars(value, op_names).items():
                for edge, ops in edges.items():
                    out.update({f"arch/{cell}/{edge}/{op}": w for op, w in ops.items()})
        elif isinstance(value, Mapping):
            for sub, v in _flatten(value, key).items():
                out[sub] = v
        elif (v := _number(value)) is not None:
            out[tag(key)] = v
    return out


def _flatten(mapping: Mapping[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
        elif (v := _number(value)) is not None:
            out[name] = v
    return out


_INVALID = re.compile(r"[^-/\w.]")


def _clean(name: str) -> str:
    """A tag in the characters TensorBoard keeps (as tensorboardX's `_clean_tag`)."""
    return _INVALID.sub("_", name).lstrip("/")


class EventWriter:
    """Writes the loop's records as TensorBoard events into `workdir`.

    `start`: the step the loop continues from (0 for a new run); events a previous
    session wrote after it are purged (see the module docstring).
    """

    def __init__(self, workdir: str, *, start: int, enabled: bool = True,
                 op_names: Sequence[str] | None = None):
        self.op_names = op_names
        self._writer = None
        self._layout_done = False
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        if wd.is_remote(workdir):
            _route_uris_through_workdir()

        # tensorboardX names a file by the second it opens and the host, and opens it
        # "wb": a numbered suffix keeps two sessions in one second apart, in order
        session = len(wd.glob(workdir, "events.out.tfevents.*"))
        self._writer = SummaryWriter(logdir=workdir, purge_step=start + 1,
                                     flush_secs=10, filename_suffix=f".{session:04d}")

    def write(self, step: int, record: Mapping[str, Any],
              walltime: float | None = None) -> None:
        if self._writer is None:
            return
        from tensorboardX.proto.summary_pb2 import Summary

        # one event per step holding every value, built directly: tensorboardX's
        # add_scalar makes one event per scalar through numpy, which dominated the
        # cost of an evaluation record of DARTS' 224 op weights
        values = [Summary.Value(tag=_clean(name), simple_value=value)
                  for name, value in scalars(record, self.op_names).items()]
        if values:
            self._writer.file_writer.add_summary(Summary(value=values), int(step),
                                                 walltime)
        if "arch_weights" in record and not self._layout_done:
            self._add_layout(record["arch_weights"])

    def _add_layout(self, weights: Any) -> None:
        """Custom Scalars: per cell a category, per edge one chart of its ops."""
        layout = {
            f"arch/{cell}": {edge: ["Multiline", [f"arch/{cell}/{edge}/{op}"
                                                  for op in ops]]
                             for edge, ops in edges.items()}
            for cell, edges in arch_scalars(weights, self.op_names).items()}
        if layout:
            self._writer.add_custom_scalars(layout)
        self._layout_done = True

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _ObjectEventFile:
    """An event file on an object store, for tensorboardX: a store cannot append,
    so the file's bytes stay in memory and each flush writes the object whole (as
    tensorboardX's own gs:// writer does), through `jaxnas.workdir`."""

    def __init__(self, path: str):
        import io

        self.path, self.buffer = path, io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        wd.write_bytes(self.path, self.buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _ObjectEventFiles:
    """tensorboardX's writer factory for workdir URIs."""

    def open(self, path: str) -> _ObjectEventFile:
        return _ObjectEventFile(path)

    def directory_check(self, path: str) -> None:
        wd.makedirs(path)


def _route_uris_through_workdir() -> None:
    """Makes tensorboardX write gs://, s3:// and az:// event files through
    `jaxnas.workdir` (etils.epath), like every other workdir file."""
    from tensorboardX import record_writer

    for scheme in ("gs", "s3", "az"):
        record_writer.register_writer_factory(scheme, _ObjectEventFiles())
