"""Orbax checkpoints of a whole search state plus a JSON sidecar (data position, config).

A checkpoint is ``workdir/checkpoints/STEP/`` with two items: ``state`` (the state
pytree, `ocp.args.StandardSave`) and ``meta`` (JSON: data-iterator positions, the
config, and the SHA-256 of the state's bytes). Saves are asynchronous (orbax writes
in background threads after copying the arrays to the host) and collective: with
several processes every process calls `Checkpointer.save` and orbax coordinates the
writes (the workdir must be on a filesystem every process sees).

Integrity: orbax detects missing or truncated files but restores flipped bytes
silently, so `restore` also compares the restored state's SHA-256 with the one
recorded at save time. A checkpoint that fails either way is reported with a
warning, moved aside to ``workdir/checkpoints.corrupt/STEP-N`` (so that the run can
write that step again) and the previous checkpoint is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxnas import workdir as wd

log = logging.getLogger("jaxnas")

DIGEST_KEY = "state_sha256"
# orbax saves a replicated array "replica-parallel" (each device writes a slice),
# which compiles a slicing program per array shape on the first save: 8-10 s for a
# DARTS state on 8 (fake CPU) devices against 0.05 s without. Search states are
# replicated and mostly small, so only arrays of at least this size are sliced.
REPLICA_PARALLEL_MIN_BYTES = 4 << 20
_ORBAX_CONFIGURED = False


def _configure_orbax() -> None:
    """Registers jaxnas' jax.Array handler with orbax once per process."""
    global _ORBAX_CONFIGURED
    if not _ORBAX_CONFIGURED:
        # Keep the default handler's array-metadata store: it records each typed PRNG
        # key's implementation, without which an "rbg" key restores as a threefry key
        # of the wrong shape (tests/test_train.py, interrupted-and-resumed training).
        default = ocp.type_handlers.get_type_handler(jax.Array)
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(
                min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES,
                array_metadata_store=getattr(default, "_array_metadata_store", None)),
            override=True)
        _ORBAX_CONFIGURED = True


class CorruptCheckpointError(ValueError):
    """A checkpoint's state does not match the digest recorded when it was saved."""


class NoSoundCheckpointError(ValueError):
    """Checkpoints exist but none can be restored; the message lists why."""


class StateLayoutError(NoSoundCheckpointError):
    """A checkpoint's state has other fields than this version's state: it was written
    by another version of jaxnas (systematic, so nothing is moved aside)."""


# Fields a state gained in a later version, and what they are, so that a refusal of
# an older workdir says what changed.
ADDED_FIELDS = {
    "key": "the PRNG key a DARTS (bilevel) search state carries since the one-engine "
           "redesign; random relaxations draw from it",
}


def _host_leaf(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if not x.is_fully_addressable:  # replicated over processes: the local copy
            return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def state_digest(state: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes (typed PRNG keys by
    their key data); the same on every process for a replicated state."""
    digest = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    for path, leaf in leaves:
        leaf = np.ascontiguousarray(_host_leaf(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}|"
                      .encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


class Checkpointer:
    """Saves `(state pytree, JSON metadata)` every few steps under `workdir/checkpoints`.

    Restoring takes an abstract target (the freshly initialised state, with its
    shardings) so that optax states, typed PRNG keys, dtypes and the placement come
    back exactly. A latest checkpoint that cannot be read, or whose bytes differ
    from those saved, is skipped with a warning and the previous one is used.
    `save_seconds` holds the blocking time of each save (the device-to-host copy
    and the digest; orbax writes the files in the background).
    """

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3,
                 enabled: bool = True):
        self.workdir = wd.resolve(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.enabled = enabled
        self.save_seconds: list[float] = []
        _configure_orbax()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False
             ) -> bool:
        """Starts saving `state` at `step` (returns False if that step exists)."""
        if not self.enabled or step in (self._manager.all_steps() or []):
            return False
        t0 = time.perf_counter()
        meta = {**meta, DIGEST_KEY: state_digest(state)}
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=force,
        )
        self.save_seconds.append(time.perf_counter() - t0)
        return True

    def restore(self, target: Any) -> tuple[Any, dict[str, Any], int] | None:
        """Returns (state, meta, step) of the newest sound checkpoint, or None if
        there is no checkpoint.

        Unsound checkpoints newer than it are moved aside (see the module docstring).
        When checkpoints exist but none restores, nothing is moved and
        NoSoundCheckpointError is raised: that is more likely a systematic mismatch
        (another version's state layout, a filesystem problem) than corruption, and
        starting afresh silently would discard the run.
        """
        steps = self._manager.all_steps()
        if steps:
            self._check_layout(max(steps), target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        bad = []
        reasons = []
        found = None
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                  meta=ocp.args.JsonRestore()))
                meta = dict(restored["meta"])
                expected = meta.get(DIGEST_KEY)
                if expected is not None and state_digest(restored["state"]) != expected:
                    raise CorruptCheckpointError(
                        "the restored bytes differ from those saved (SHA-256 mismatch)")
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                log.warning("checkpoint at step %d is corrupt or unreadable (%s: %s); "
                            "falling back to an older one", step, type(e).__name__,
                            str(e).splitlines()[0][:300] if str(e) else "")
                bad.append(step)
                reasons.append(f"step {step}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200] if str(e) else ''}")
                continue
            found = (restored["state"], meta, step)
            break
        if bad and found is None:
            raise NoSoundCheckpointError(
                f"none of the checkpoints in {self.directory} can be restored ("
                + "; ".join(reasons) + "). Move that directory away to start the search "
                "afresh, or use a new --workdir.")
        if bad:
            self._quarantine(bad)
        return found

    def restore_at(self, step: int, target: Any) -> Any:
        """The state saved at `step` (read-only use, e.g. `jaxnas study --from`);
        CorruptCheckpointError if its bytes differ from those saved."""
        self._check_layout(step, target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                          meta=ocp.args.JsonRestore()))
        expected = dict(restored["meta"]).get(DIGEST_KEY)
        if expected is not None and state_digest(restored["state"]) != expected:
            raise CorruptCheckpointError(
                f"the checkpoint at step {step} in {self.directory}: the restored bytes "
                "differ from those saved (SHA-256 mismatch)")
        return restored["state"]

    def _check_layout(self, step: int, target: Any) -> None:
        """StateLayoutError when the newest checkpoint's top-level state fields differ
        from `target`'s (read from orbax's tree metadata; a checkpoint whose metadata
        cannot be read is left to `restore`'s corruption handling)."""
        saved = _saved_fields(os.path.join(self.directory, str(step), "state"))
        if saved is None:
            return
        wanted = _fields(target)
        missing, extra = sorted(wanted - saved), sorted(saved - wanted)
        if not missing and not extra:
            return
        parts = []
        if missing:
            parts.append("lacks " + ", ".join(
                repr(f) + (f" ({ADDED_FIELDS[f]})" if f in ADDED_FIELDS else "")
                for f in missing))
        if extra:
            parts.append("has " + ", ".join(repr(f) for f in extra) + " that this "
                         "version's state does not")
        raise StateLayoutError(
            f"the checkpoint at step {step} in {self.directory} was written by another "
            f"version of jaxnas: its state {' and '.join(parts)}, so this version "
            "cannot resume it. Finish that run with the jaxnas version that started "
            "it, or start afresh with a new --workdir (or move the workdir's "
            "checkpoints/ away); nothing was changed.")

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unsound step directories to ``workdir/checkpoints.corrupt/``."""
        from jaxnas import parallel

        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            aside = os.path.join(self.workdir, "checkpoints.corrupt")
            wd.makedirs(aside)
            for step in steps:
                source = os.path.join(self.directory, str(step))
                if not wd.isdir(source):
                    continue
                n = 0
                while wd.exists(os.path.join(aside, f"{step}-{n}")):
                    n += 1
                target = os.path.join(aside, f"{step}-{n}")
                wd.move(source, target)
                log.warning("moved the unsound checkpoint of step %d to %s", step,
                            target)
        parallel.sync("jaxnas-checkpoint-quarantine")
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _fields(tree: Any) -> set[str]:
    """Top-level field names of a state pytree that hold at least one leaf."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_key_name(path[0]) for path, _ in paths if path}


def _saved_fields(item_dir: str) -> set[str] | None:
    """Top-level field names of a saved state item, from orbax's ``_METADATA``
    (None if it is missing or unreadable)."""
    try:
        tree = json.loads(wd.read_text(os.path.join(item_dir, "_METADATA")))[
            "tree_metadata"]
        return {entry["key_metadata"][0]["key"] for entry in tree.values()
                if entry.get("key_metadata")}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def latest_meta(workdir: str) -> dict[str, Any] | None:
    """The JSON metadata of the newest readable checkpoint in `workdir`, or None.

    Read without the state, so that a run whose state has other shapes (another config
    or genotype) is recognised before anything is restored or overwritten.
    """
    directory = os.path.join(wd.resolve(workdir), "checkpoints")
    if not wd.isdir(directory):
        return None
    manager = ocp.CheckpointManager(directory)
    try:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                restored = manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            except Exception:  # noqa: BLE001 - Checkpointer.restore reports these
                continue
            return dict(restored["meta"])
    finally:
        manager.close()
    return None
