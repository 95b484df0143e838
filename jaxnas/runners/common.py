"""Pieces every search loop shares: config record, resume checks, signals, finiteness."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
from typing import Any, Mapping

import ml_collections

from jaxnas import config as config_lib
from jaxnas import workdir as wd

log = logging.getLogger("jaxnas")

# Keys that may differ between a checkpointed run and its resumption: they change how
# long or how verbosely a search runs, not what it computes.
RESUMABLE_KEYS = ("num_steps", "log_every", "eval_every", "checkpoint_every",
                  "keep_checkpoints", "data.data_dir")


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names the step and the quantity."""


def record_config(config: ml_collections.ConfigDict, workdir: str, *, enabled: bool) -> None:
    """Writes the resolved config to `workdir/config.json`."""
    if enabled:
        wd.write_json(os.path.join(workdir, "config.json"), config.to_dict())


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resumable(config: ml_collections.ConfigDict, meta: Mapping[str, Any]) -> None:
    """Refuses to resume a checkpoint written under a config that computes differently."""
    saved = _flatten(meta.get("config", {}))
    now = _flatten(json.loads(json.dumps(config.to_dict())))
    differing = sorted(k for k in set(saved) | set(now)
                       if k not in RESUMABLE_KEYS and saved.get(k) != now.get(k))
    if differing:
        details = ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {now.get(k)!r})"
                            for k in differing)
        raise config_lib.ConfigError(
            f"the workdir holds a run with a different config: {details}. Use a new "
            "--workdir, or restore those values to resume.")


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    """Raises NonFiniteError naming the first non-finite metric."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteError(
                f"{key} is {value} at step {step}; the last good checkpoint is kept. Try a "
                "smaller learning rate (config.optim.*) or a different seed.")


class GracefulStop:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can checkpoint and exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.requested = True
        log.warning("received signal %d: finishing this step and checkpointing", signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def load_data(config: ml_collections.ConfigDict):
    """The bilevel search data a config names (`jaxnas.data.SearchData`)."""
    from jaxnas import data as data_lib

    return data_lib.load_search_data(config.data.dataset, config.data.data_dir or None,
                                     split_fraction=config.data.split_fraction,
                                     seed=config.seed)


def batches(split, data, config: ml_collections.ConfigDict, *, seed: int, augment: bool):
    """Endless, seeded, resumable training batches of `split` (this process's slice)."""
    from jaxnas import data as data_lib

    aug = data_lib.Augment(config.data.crop_padding, config.data.flip,
                           config.data.cutout) if augment else None
    return data_lib.BatchIterator(split.images, split.labels,
                                  batch_size=config.data.batch_size, mean=data.mean,
                                  std=data.std, seed=seed, augment=aug)


def evaluate(eval_fn, state, split, data, batch_size: int) -> dict[str, float]:
    """Mean loss and accuracy of `eval_fn(state, batch)` over a whole split.

    `eval_fn` returns per-batch sums {"loss_sum", "correct", "count"} weighted by the
    batch's mask, so that padding in the last batch does not count.
    """
    import jax

    from jaxnas import data as data_lib

    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in data_lib.eval_batches(split, batch_size, data.mean, data.std):
        out = jax.device_get(eval_fn(state, batch))
        for key in totals:
            totals[key] += float(out[key])
    count = max(totals["count"], 1.0)
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}
