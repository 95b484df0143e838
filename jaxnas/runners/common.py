"""Pieces every search loop shares: config record, resume checks, signals, finiteness,
out-of-memory reports, sharded steps and batches."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import ml_collections

from jaxnas import config as config_lib
from jaxnas import workdir as wd

log = logging.getLogger("jaxnas")

# Keys that may differ between a checkpointed run and its resumption: they change how
# long or how verbosely a search runs, not what it computes.
# The mesh changes only the order of floating-point reductions (a run may resume on
# another number of devices; it is then equal within float tolerance, not bitwise).
RESUMABLE_KEYS = ("num_steps", "log_every", "eval_every", "checkpoint_every",
                  "keep_checkpoints", "data.data_dir", "mesh.data", "mesh.path",
                  "mesh.pop")


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names the step and the quantity."""


class DeviceOutOfMemoryError(RuntimeError):
    """A device ran out of memory; the message suggests the config keys to lower."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the search after a checkpoint; `signum` says which."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum


def record_config(config: ml_collections.ConfigDict, workdir: str, *, enabled: bool) -> None:
    """Writes the resolved config to `workdir/config.json`."""
    if enabled:
        wd.write_json(os.path.join(workdir, "config.json"), config.to_dict())


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (a config as JSON) as {"a.b.c": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resumable(config: ml_collections.ConfigDict, meta: Mapping[str, Any]) -> None:
    """Refuses to resume a checkpoint written under a config that computes differently."""
    saved = flatten(meta.get("config", {}))
    now = flatten(json.loads(json.dumps(config.to_dict())))
    differing = sorted(k for k in set(saved) | set(now)
                       if k not in RESUMABLE_KEYS and saved.get(k) != now.get(k))
    if differing:
        details = ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {now.get(k)!r})"
                            for k in differing)
        raise config_lib.ConfigError(
            f"the workdir holds a run with a different config: {details}. Use a new "
            "--workdir, or restore those values to resume.")


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    """Raises NonFiniteError naming every non-finite metric and the step."""
    bad = [f"{key} is {value}" for key, value in metrics.items()
           if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        raise NonFiniteError(
            f"{', '.join(bad)} at step {step}; the last good checkpoint is kept. Try a "
            "smaller learning rate (config.optim.*) or a different seed.")


def check_state_finite(step: int, state: Any) -> None:
    """Raises NonFiniteError naming the state entries that hold NaN/inf (checked on
    the devices before a checkpoint is written, so a bad state is never saved)."""
    import jax
    import jax.numpy as jnp

    from jaxnas import parallel

    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    floats = [(p, x) for p, x in leaves
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if not floats:
        return
    ok = parallel.host(_all_finite([x for _, x in floats]))
    bad = [jax.tree_util.keystr(p) for (p, _), good in zip(floats, ok) if not good]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(
            f"the search state holds NaN/inf at step {step} (in {shown}); it was not "
            "checkpointed and the last good checkpoint is kept. Try a smaller learning "
            "rate (config.optim.*) or a different seed.")


def _all_finite(leaves):
    import jax
    import jax.numpy as jnp

    global _ALL_FINITE
    if _ALL_FINITE is None:
        _ALL_FINITE = jax.jit(lambda xs: jnp.stack([jnp.all(jnp.isfinite(x))
                                                    for x in xs]))
    return _ALL_FINITE(leaves)


_ALL_FINITE = None

_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


@contextlib.contextmanager
def out_of_memory_report(config: Any, keys: Sequence[str] = ("data.batch_size",)
                         ) -> Iterator[None]:
    """Turns an XLA out-of-memory error into DeviceOutOfMemoryError naming `keys`
    (their current values, and half of each as the suggestion)."""
    try:
        yield
    except (NonFiniteError, KeyboardInterrupt, config_lib.ConfigError):
        raise
    except Exception as e:  # noqa: BLE001 - XlaRuntimeError has no stable import path
        text = str(e)
        if not any(m in text for m in _OOM_MARKERS):
            raise
        values = []
        for key in keys:
            value = config
            try:
                for part in key.split("."):
                    value = value[part]
            except (KeyError, AttributeError):
                continue
            half = max(1, value // 2) if isinstance(value, int) else value
            values.append(f"config.{key}={value} (try --config.{key}={half})")
        first = next((line for line in text.splitlines() if any(
            m in line for m in _OOM_MARKERS)), text.splitlines()[0] if text else "")
        raise DeviceOutOfMemoryError(
            "a device ran out of memory: " + first.strip()[:300] + ". Use a smaller "
            "batch: " + ", ".join(values) + "; or more devices on the 'data' mesh axis "
            "(config.mesh.data), or a smaller model. The last checkpoint is intact; "
            "re-run the same command with the new value in a new --workdir, or on "
            "this one if only the batch size of the evaluation changed.") from None


class GracefulStop:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can checkpoint and exit."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second signal: stop at once
            raise Interrupted(signum, "second signal: stopped at once")
        self.requested = True
        self.signum = signum
        log.warning("received signal %d: finishing this step and checkpointing", signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def check(self) -> bool:
        """Whether a stop was requested here or (multi-process) on any process."""
        from jaxnas import parallel

        return parallel.any_process(self.requested)

    def stop(self, step: int) -> Interrupted:
        """The exception that ends the loop after the checkpoint of `step`."""
        log.warning("stopped by signal %d at step %d; checkpoint saved, re-run the "
                    "same command to resume", self.signum, step)
        return Interrupted(self.signum, f"stopped at step {step}")


def load_data(config: ml_collections.ConfigDict):
    """The bilevel search data a config names (`jaxnas.data.SearchData`)."""
    from jaxnas import data as data_lib

    return data_lib.load_search_data(config.data.dataset, config.data.data_dir or None,
                                     split_fraction=config.data.split_fraction,
                                     seed=config.seed)


def batches(split, data, config: ml_collections.ConfigDict, *, seed: int, augment: bool,
            rows: tuple[int, int] | None = None):
    """Endless, seeded, resumable training batches of `split` (this process's slice).

    `rows` = (index, count): the slice of every global batch this process feeds
    (`jaxnas.parallel.process_rows`); default: by process index.
    """
    from jaxnas import data as data_lib

    aug = data_lib.Augment(config.data.crop_padding, config.data.flip,
                           config.data.cutout) if augment else None
    index, count = rows if rows is not None else (None, None)
    return data_lib.BatchIterator(split.images, split.labels,
                                  batch_size=config.data.batch_size, mean=data.mean,
                                  std=data.std, seed=seed, augment=aug,
                                  process_index=index, process_count=count)


def evaluate(eval_fn, state, split, data, batch_size: int, *, mesh=None
             ) -> dict[str, float]:
    """Mean loss and accuracy of `eval_fn(state, batch)` over a whole split.

    `eval_fn` returns per-batch sums {"loss_sum", "correct", "count"} weighted by the
    batch's mask, so that padding in the last batch does not count. With `mesh`,
    every batch is split on its `data` axis, each process feeding its own rows.
    """
    from jaxnas import data as data_lib
    from jaxnas import parallel

    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    if mesh is None:
        feed, index, count = (lambda b: b), None, None
    else:
        sharding = parallel.batch_sharding(mesh)
        index, count = parallel.process_rows(sharding, (batch_size,))
        shape = parallel.scale_axis(0, count)
        feed = lambda b: parallel.global_batch(b, sharding, shape)  # noqa: E731
    for batch in data_lib.eval_batches(split, batch_size, data.mean, data.std,
                                       process_index=index, process_count=count):
        out = parallel.host(eval_fn(state, feed(batch)))
        for key in totals:
            totals[key] += float(out[key])
    count = max(totals["count"], 1.0)
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


# ----------------------------------------------------------------------------------
# Sharded steps: one jitted function, placed on a mesh by its shardings.


def jit_step(step: Callable, mesh, batch_shardings: Sequence[Any], *,
             prepare: Callable | None = None, donate: bool = True) -> Callable:
    """``jit(step)`` with the state (and metrics) replicated over `mesh` and each
    batch argument placed by `batch_shardings`; ``prepare(*batches)`` optionally
    reshapes/constrains the batches inside the jitted function."""
    import jax

    from jaxnas import parallel

    rep = parallel.replicated(mesh)
    def prepared(state, *batches):
        return step(state, *prepare(*batches))

    fn = step if prepare is None else prepared
    return jax.jit(fn, in_shardings=(rep, *batch_shardings), out_shardings=(rep, rep),
                   donate_argnums=(0,) if donate else ())


def init_state(init: Callable, mesh) -> Any:
    """``init()`` (no arguments: keys and sample inputs are made inside) jitted with
    a replicated result, so fresh and restored states are placed alike."""
    import jax

    from jaxnas import parallel

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()


def host_metrics(metrics: Any) -> dict[str, float]:
    """Replicated metrics as Python floats (on every process)."""
    from jaxnas import parallel

    return {k: float(v) for k, v in parallel.host(metrics).items()}


@dataclasses.dataclass
class LoopResult:
    """What the step loop reports: the last step, the first step's wall time
    (compilation included), the wall times of the later steps (`run_step`: feeding
    the batch and the jitted step), the blocking time of each checkpoint save."""

    step: int
    first_step_s: float | None
    step_times: list[float]
    save_seconds: list[float]


def step_loop(*, start: int, stop: int, run_step: Callable[[], Mapping[str, float]],
              eval_due: Callable[[int], bool], evaluate: Callable[[int], dict],
              save: Callable[..., None], checkpointer: Any, config: ml_collections.ConfigDict,
              metrics_log: Any, desc: str, lead: bool, t0: float) -> LoopResult:
    """The loop every runner shares: steps `start`..`stop` with progress, a finite check
    of each step's metrics, evaluation when `eval_due(step)`, `metrics.jsonl` records
    every `config.log_every` steps (and with every evaluation), checkpoints every
    `config.checkpoint_every` steps and at the end, and on SIGINT/SIGTERM (on any
    process) a checkpoint and `Interrupted`.

    run_step: one step; returns its metrics as host floats (with train_loss and
      train_accuracy). evaluate(step): the fields to add to that step's record.
      save(step, force=False): checkpoint the current state.
    """
    progress = wd.Progress(stop, initial=start, desc=desc, enabled=lead,
                           log_every=config.log_every)
    stopper = GracefulStop()
    first_step_s, step_times = None, []
    step = start
    try:
        while step < stop:
            t_step = time.time()
            metrics = run_step()
            step += 1
            if first_step_s is None:
                first_step_s = time.time() - t0
                log.info("first step (compilation included) took %.1f s", first_step_s)
            else:
                step_times.append(time.time() - t_step)
            check_finite(step, metrics)
            progress.update(1, {k: metrics[k] for k in ("train_loss", "train_accuracy")})
            record = evaluate(step) if eval_due(step) else {}
            if step % config.log_every == 0 or record:
                metrics_log.write(step, {**metrics, **record})
            if step % config.checkpoint_every == 0 or step == stop:
                save(step)
            if stopper.check():
                save(step, force=True)
                checkpointer.wait()
                raise stopper.stop(step)
    finally:
        progress.close()
        stopper.restore()
        checkpointer.close()
    saves = list(checkpointer.save_seconds)
    if saves:
        log.info("checkpoints: %d saves, %.3f s blocking each on average", len(saves),
                 sum(saves) / len(saves))
    return LoopResult(step, first_step_s, step_times, saves)
