"""The one search loop (`jaxnas.runners.loop`) with a toy method: least squares by
SGD, fed by a counting iterator. Resume, refusal, cadence and the NaN stop, in
seconds (the DARTS, FairNAS and retraining hooks run through the CLI tests)."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from jaxnas import errors

W_TRUE = np.array([1.5, -2.0, 0.5], np.float32)


def _config(**over):
    config = ml_collections.ConfigDict({
        "seed": 0, "epochs": 1, "num_steps": 6, "log_every": 2, "eval_every": 3,
        "checkpoint_every": 2, "keep_checkpoints": 3, "data": {"batch_size": 4},
        "lr": 0.1})
    config.update(over)
    return config


class Feed:
    """Deterministic batches from a position (what a data iterator must offer)."""

    def __init__(self):
        self.n = 0

    def __next__(self):
        rng = np.random.default_rng(self.n)
        self.n += 1
        x = rng.normal(size=(4, 3)).astype(np.float32)
        return {"x": x, "y": x @ W_TRUE}

    def position(self):
        return {"n": self.n}

    def restore(self, position):
        self.n = position["n"]


class Toy:
    """A method's hooks: one weight vector, one SGD step on squared error."""

    desc = "toy"
    results_file = "toy.json"
    memory_keys = ("data.batch_size",)

    def check(self, config, mesh):
        pass

    def check_resumable(self, config, meta):
        from jaxnas.runners import common

        common.check_resumable(config, meta)

    feed = Feed

    def meta(self):
        return {"toy": 1}

    def build(self, config, mesh):
        import jax
        import jax.numpy as jnp

        from jaxnas import parallel
        from jaxnas.runners import common, loop

        feed = self.feed()

        def step(state, batch):  # the state: a pytree (orbax saves no bare array)
            def loss(w):
                return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

            value, g = jax.value_and_grad(loss)(state["w"])
            return {"w": state["w"] - config.lr * g}, {
                "train_loss": value, "train_accuracy": jnp.float32(0)}

        def evaluate(state, step):
            return {"val_error": float(np.abs(np.asarray(state["w"]) - W_TRUE).sum())}

        def finalize(state, result):
            return {"w": np.asarray(state["w"]).tolist(), **result.summary()}

        return loop.Plan(
            init=lambda: {"w": jnp.zeros(3, jnp.float32)},
            step=common.jit_step(step, mesh, (parallel.replicated(mesh),)),
            batches=lambda: (next(feed),), feeds={"train": feed},
            stop=config.num_steps, evaluate=evaluate,
            eval_due=lambda s: s % config.eval_every == 0 or s == config.num_steps,
            finalize=finalize)


def _run(config, workdir, hooks=None, **kw):
    from jaxnas.runners import loop

    return loop.run(config, str(workdir), hooks or Toy(), **kw)


def _records(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_resumed_run_equals_an_uninterrupted_one_bitwise(tmp_path):
    whole = _run(_config(), tmp_path / "a")
    assert whole["steps"] == 6 and json.load(open(tmp_path / "a" / "toy.json")) == whole
    assert whole["timing"]["checkpoint_saves"] == 3
    _run(_config(num_steps=3), tmp_path / "b")  # stops at 3 (checkpointed at the end)
    resumed = _run(_config(), tmp_path / "b")
    assert resumed["w"] == whole["w"]  # the same floats
    a, b = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert [r["step"] for r in a] == [2, 3, 4, 6]  # log_every 2, evaluations at 3, 6
    assert [r["step"] for r in b] == [2, 3, 4, 6]  # nothing twice after the resume
    drop = ("time",)
    assert ([{k: v for k, v in r.items() if k not in drop} for r in a]
            == [{k: v for k, v in r.items() if k not in drop} for r in b])
    assert "val_error" in a[1] and "val_error" not in a[0]
    # SGD on a noiseless least-squares problem moves towards the truth
    assert a[-1]["val_error"] < a[1]["val_error"] < np.abs(W_TRUE).sum()


def test_a_different_config_is_refused_before_anything_is_written(tmp_path):
    _run(_config(num_steps=2), tmp_path)
    before = open(tmp_path / "config.json").read()
    with pytest.raises(errors.ConfigError, match=r"lr \(checkpoint 0.1, now 0.2\)"):
        _run(_config(lr=0.2), tmp_path)
    assert open(tmp_path / "config.json").read() == before
    _run(_config(num_steps=4), tmp_path)  # a longer run of the same config resumes


def test_a_nan_stops_the_loop_naming_the_step_and_keeps_good_checkpoints(tmp_path):
    # step 1 from w = 0 has a finite loss and jumps to |w| ~ 1e21: the squared
    # error of step 2 overflows float32
    with pytest.raises(errors.NonFiniteError, match="^train_loss is inf at step 2;"):
        _run(_config(lr=1e20, num_steps=12, checkpoint_every=1), tmp_path)
    steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert steps == [1]  # the finite state before it was saved, nothing after
    assert not os.path.exists(tmp_path / "toy.json")


class SigintFeed(Feed):
    """A Feed that sends this process SIGINT while drawing the batch of step 7 (as
    a user's Ctrl-C landing while the loop prepares the next step)."""

    def __next__(self):
        if self.n == 6:
            import signal

            os.kill(os.getpid(), signal.SIGINT)
        return super().__next__()


class SigintToy(Toy):
    feed = SigintFeed


def test_overlapped_steps_log_checkpoint_and_resume_as_the_serial_loop(tmp_path):
    """The loop dispatches step k + 1 before fetching step k's metrics; steps that
    are not evaluated or checkpointed (5 of 10 here) are settled one step late. The
    records, the result and a resume after a signal are those of the serial loop."""
    config = _config(num_steps=10, log_every=1, eval_every=5, checkpoint_every=4)
    serial = _run(config, tmp_path / "serial", overlap=False)
    overlapped = _run(config, tmp_path / "overlapped")
    assert overlapped["w"] == serial["w"]
    drop = ("time",)
    a, b = _records(tmp_path / "serial"), _records(tmp_path / "overlapped")
    assert [r["step"] for r in b] == list(range(1, 11))
    assert ([{k: v for k, v in r.items() if k not in drop} for r in a]
            == [{k: v for k, v in r.items() if k not in drop} for r in b])
    with pytest.raises(errors.Interrupted, match="stopped at step 7"):
        _run(config, tmp_path / "signalled", SigintToy())
    from jaxnas import checkpoint

    # Saved after step 7 with the feed at 7 batches drawn (not 8: the batch of step 8
    # is drawn only after step 7 is settled)
    assert checkpoint.latest_meta(str(tmp_path / "signalled"))["train_position"] == {
        "n": 7}
    resumed = _run(config, tmp_path / "signalled")
    assert resumed["w"] == serial["w"]
    c = _records(tmp_path / "signalled")
    assert ([{k: v for k, v in r.items() if k not in drop} for r in c]
            == [{k: v for k, v in r.items() if k not in drop} for r in a])


def test_a_nan_in_a_step_settled_late_is_named_and_never_checkpointed(tmp_path):
    # step 2 overflows (see above); with checkpoints every 3 steps it is not settled
    # before step 3 is dispatched, and the error still names step 2; no checkpoint
    with pytest.raises(errors.NonFiniteError, match="^train_loss is inf at step 2;"):
        _run(_config(lr=1e20, num_steps=12, checkpoint_every=3, eval_every=12,
                     log_every=1), tmp_path)
    assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
    assert [r["step"] for r in _records(tmp_path)] == [1]


def test_the_first_evaluation_pause_is_explained_once(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="jaxnas"):
        _run(_config(), tmp_path)  # evaluations at steps 3 and 6
    lines = [r.getMessage() for r in caplog.records if "first evaluation" in
             r.getMessage()]
    assert lines == ["step 3: first evaluation (its programs compile once; the steps "
                     "pause meanwhile)"]
