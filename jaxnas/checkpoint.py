"""Orbax checkpoints of a whole search state plus a JSON sidecar (data position, config)."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("jaxnas")


class Checkpointer:
    """Saves `(state pytree, JSON metadata)` every few steps under `workdir/checkpoints`.

    Restoring takes an abstract target (the freshly initialised state) so that optax
    states, typed PRNG keys and dtypes come back exactly. A latest checkpoint that
    cannot be read is skipped with a warning and the previous one is used.
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 3, enabled: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.enabled = enabled
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> None:
        if step in (self._manager.all_steps() or []):
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def restore(self, target: Any) -> tuple[Any, dict[str, Any], int] | None:
        """Returns (state, meta, step) of the newest readable checkpoint, or None."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                  meta=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                log.warning("checkpoint at step %d is unreadable (%s: %s); trying an "
                            "older one", step, type(e).__name__, str(e)[:200])
                continue
            return restored["state"], dict(restored["meta"]), step
        return None

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def latest_meta(workdir: str) -> dict[str, Any] | None:
    """The JSON metadata of the newest readable checkpoint in `workdir`, or None.

    Read without the state, so that a run whose state has other shapes (another config
    or genotype) is recognised before anything is restored or overwritten.
    """
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
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
