"""Pieces of the search loop: config record, resume checks, signals, finiteness,
out-of-memory reports, sharded steps, batches and evaluation."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
from typing import Any, Callable, Iterator, Mapping, Sequence

import ml_collections

from jaxnas import config as config_lib
from jaxnas import workdir as wd
# Re-exported from their homes (old import paths keep working).
from jaxnas.config import flatten  # noqa: F401
from jaxnas.errors import DeviceOutOfMemoryError, Interrupted, NonFiniteError  # noqa: F401

log = logging.getLogger("jaxnas")

# Keys that may differ between a checkpointed run and its resumption: they change how
# long or how verbosely a search runs, not what it computes.
# The mesh changes only the order of floating-point reductions (a run may resume on
# another number of devices; it is then equal within float tolerance, not bitwise).
RESUMABLE_KEYS = ("num_steps", "log_every", "eval_every", "checkpoint_every",
                  "keep_checkpoints", "data.data_dir", "mesh.data", "mesh.path",
                  "mesh.pop", "tensorboard")


def record_config(config: ml_collections.ConfigDict, workdir: str, *, enabled: bool) -> None:
    """Writes the resolved config to `workdir/config.json`."""
    if enabled:
        wd.write_json(os.path.join(workdir, "config.json"), config.to_dict())


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
    """Raises NonFiniteError naming every non-finite metric and the step (the
    training loss first when it is one of them: it is what a user watches)."""
    bad = sorted((key for key, value in metrics.items()
                  if isinstance(value, float) and not math.isfinite(value)),
                 key=lambda key: (key != "train_loss", key))
    if bad:
        raise NonFiniteError(
            f"{', '.join(f'{key} is {metrics[key]}' for key in bad)} at step {step}; "
            "the last good checkpoint is kept. Try a smaller learning rate "
            "(config.optim.*) or a different seed.")


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


def sharded_batches(split, data, config: ml_collections.ConfigDict, mesh, *, seed: int,
                    augment: bool):
    """``(iterator, to_global)``: this process's rows of endless `batches` of `split`,
    and the function that makes a global batch split on the mesh's ``data`` axis."""
    import functools

    from jaxnas import parallel

    sharding = parallel.batch_sharding(mesh)
    rows = parallel.process_rows(sharding, (config.data.batch_size,))
    to_global = functools.partial(parallel.global_batch, sharding=sharding,
                                  global_shape_of=parallel.scale_axis(0, rows[1]))
    return batches(split, data, config, seed=seed, augment=augment, rows=rows), to_global


def eval_function(evaluate: Callable, mesh) -> Callable:
    """``jit(evaluate)`` for `evaluate(state, batch)`: state replicated, the batch
    split on ``data``, the sums replicated (for `evaluate` above)."""
    import jax

    from jaxnas import parallel

    rep = parallel.replicated(mesh)
    return jax.jit(evaluate, in_shardings=(rep, parallel.batch_sharding(mesh)),
                   out_shardings=rep)


def round_to_axis(batch_size: int, mesh, what: str) -> int:
    """`batch_size` rounded up to a multiple of the ``data`` axis (evaluation batches
    are padded and masked, so this changes no result)."""
    n = mesh.shape["data"]
    rounded = -(-batch_size // n) * n
    if rounded != batch_size:
        log.info("evaluating in batches of %d (%s=%d rounded up to a multiple of "
                 "mesh.data=%d)", rounded, what, batch_size, n)
    return rounded
