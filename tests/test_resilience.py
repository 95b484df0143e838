"""Surviving interruption and failing safely.

* SIGKILL a running `jaxnas search` after it has written a checkpoint, re-run the
  same command: the final "arch" and genotype are bitwise those of an
  uninterrupted run (DARTS; FairNAS + evolution, also killed during the
  evolution). SIGTERM checkpoints and exits cleanly.
* A corrupt latest checkpoint (flipped bytes, truncated or missing files, missing
  metadata) is detected, reported with a warning, moved aside, and the previous one
  is used: end to end the result is still bitwise that of an uninterrupted run.
* A non-finite loss stops the search naming the step and the quantity; the
  non-finite state is never checkpointed. Out-of-memory errors become a clear
  message suggesting a smaller batch.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DARTS = "experiments/darts_digits.py"
FAIRNAS = "experiments/fairnas_digits.py"
# Tiny supernets: DARTS with one intermediate node a cell and grouped convolutions
# (compiles in seconds; every op still runs), the chain space of
# tests/test_oneshot_search.py. The persistent XLA cache of conftest.py lets every
# run after the first skip the compilation.
DARTS_SMALL = ["--config.model.channels=4", "--config.model.layers=3",
               "--config.model.steps=1", "--config.model.multiplier=1",
               "--config.model.impl=lax", "--config.data.batch_size=16",
               "--config.log_every=2", "--config.eval_every=4",
               "--config.checkpoint_every=2",
               "--config.darts.warmup_epochs=0"]  # the alphas move from the first step
FAIRNAS_SMALL = [
    "--config.model.stem_channels=4", "--config.model.widths=(4, 8)",
    "--config.model.depths=(1, 1)", "--config.model.strides=(1, 2)",
    "--config.model.head_channels=8", "--config.data.batch_size=16",
    "--config.log_every=2", "--config.eval_every=4", "--config.checkpoint_every=2",
    "--config.oneshot.calib_batches=2", "--config.oneshot.eval_paths=2",
    "--config.oneshot.eval_batch_size=32", "--config.oneshot.val_examples=64",
    "--config.evolution.population_size=4", "--config.evolution.sample_size=2",
    "--config.evolution.num_cycles=4", "--config.evolution.batch_size=4"]
STEPS = 8  # checkpoints at 2, 4, 6, 8 (the last 3 kept)


def _command(config, small, workdir, *extra, steps=STEPS):
    return [sys.executable, "-m", "jaxnas", "search", "--config", config, "--workdir",
            str(workdir), *small, f"--config.num_steps={steps}", *extra]


def _env(data_dir):
    return dict(os.environ, JAXNAS_DATA_DIR=data_dir)


def _run(command, data_dir, check=True):
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(data_dir),
                          cwd=ROOT, timeout=1200)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _steps(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def _interrupt(command, data_dir, workdir, sig, *, after=lambda steps: bool(steps),
               timeout=900):
    """Starts `command`, waits until `after(finalized checkpoint steps)`, sends `sig`.

    Returns (returncode, stderr, steps seen when the signal was sent).
    """
    log_path = f"{workdir}.{int(time.time() * 1000)}.stderr"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file,
                                text=True, env=_env(data_dir), cwd=ROOT)
        deadline = time.time() + timeout
        try:
            while True:
                steps = _steps(workdir)
                if steps and after(steps):
                    proc.send_signal(sig)
                    break
                if proc.poll() is not None:
                    pytest.fail("the run ended before the signal: "
                                + open(log_path).read()[-3000:])
                if time.time() > deadline:
                    pytest.fail("no checkpoint appeared in time")
                time.sleep(0.02)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, open(log_path).read(), steps


def _result(workdir):
    return json.load(open(os.path.join(workdir, "genotype.json")))


def _metric_steps(workdir):
    return [json.loads(line)["step"] for line in open(os.path.join(workdir,
                                                                   "metrics.jsonl"))]


@pytest.fixture(scope="module")
def darts_reference(tmp_path_factory, digits_data_dir):
    workdir = tmp_path_factory.mktemp("darts_reference")
    _run(_command(DARTS, DARTS_SMALL, workdir), digits_data_dir)
    return workdir


# ----------------------------------------------------------------------------------
# Kill and resume.


def test_sigkill_then_sigterm_then_rerun_gives_the_bitwise_identical_darts_result(
        darts_reference, tmp_path, digits_data_dir):
    command = _command(DARTS, DARTS_SMALL, tmp_path)
    # 1: SIGKILL as soon as a checkpoint is on disk
    rc, _, _ = _interrupt(command, digits_data_dir, tmp_path, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert not os.path.exists(tmp_path / "genotype.json")  # killed mid-search
    killed_at = max(_steps(tmp_path))
    assert 2 <= killed_at < STEPS

    # 2: re-run; SIGTERM once it has written a newer checkpoint: it finishes the
    # step, checkpoints and exits cleanly with 128 + 15
    rc, err, _ = _interrupt(command, digits_data_dir, tmp_path, signal.SIGTERM,
                            after=lambda steps: max(steps) > killed_at)
    assert f"resumed from the checkpoint at step {killed_at}" in err
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    stopped = [line for line in err.splitlines() if "stopped by signal 15 at step" in line]
    assert stopped, err[-3000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert killed_at < step < STEPS and step in _steps(tmp_path)
    assert not os.path.exists(tmp_path / "genotype.json")

    # 3: re-run to the end
    proc = _run(command, digits_data_dir)
    assert f"resumed from the checkpoint at step {step}" in proc.stderr
    a, b = _result(darts_reference), _result(tmp_path)
    assert a["arch"] == b["arch"]          # bitwise: the same floats, printed alike
    assert a["genotype"] == b["genotype"] and a["genotype_str"] == b["genotype_str"]
    assert a["arch_weights"] == b["arch_weights"]
    assert _metric_steps(tmp_path) == _metric_steps(darts_reference)  # none twice


def test_fairnas_and_evolution_killed_twice_resume_bitwise(tmp_path_factory,
                                                           digits_data_dir):
    reference = tmp_path_factory.mktemp("fairnas_reference")
    _run(_command(FAIRNAS, FAIRNAS_SMALL, reference), digits_data_dir)
    workdir = tmp_path_factory.mktemp("fairnas_killed")
    command = _command(FAIRNAS, FAIRNAS_SMALL, workdir)

    # 1: killed during the supernet training, after its first checkpoint
    rc, _, _ = _interrupt(command, digits_data_dir, workdir, signal.SIGKILL)
    assert rc == -signal.SIGKILL and max(_steps(workdir)) < STEPS
    # 2: killed after the final checkpoint, during the evolution
    rc, _, _ = _interrupt(command, digits_data_dir, workdir, signal.SIGKILL,
                          after=lambda steps: STEPS in steps)
    assert rc == -signal.SIGKILL
    assert not os.path.exists(workdir / "genotype.json")
    # 3: the evolution re-runs from the final checkpoint
    proc = _run(command, digits_data_dir)
    assert f"resumed from the checkpoint at step {STEPS}" in proc.stderr
    a, b = _result(reference), _result(workdir)
    assert a["weights_sha256"] == b["weights_sha256"]  # bitwise equal supernet
    assert a["genotype"] == b["genotype"] and a["path"] == b["path"]
    assert a["fitness"] == b["fitness"] and a["evolution"] == b["evolution"]
    assert a["training_counts"] == b["training_counts"] == [[STEPS] * 6] * 2
    assert _metric_steps(workdir) == _metric_steps(reference)


# ----------------------------------------------------------------------------------
# Corrupt checkpoints.


def _flip_file(name):
    data = bytearray(open(name, "rb").read())
    middle = len(data) // 2
    for i in range(middle, min(middle + 64, len(data))):
        data[i] ^= 0xFF
    open(name, "wb").write(bytes(data))


def _flip_bytes(step_dir):
    """Flips bytes in the largest array data file: the values change, the files
    still parse (orbax restores them silently; the SHA-256 check catches it)."""
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_*", "d", "*"))
    _flip_file(max(files, key=os.path.getsize))


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
        darts_reference, tmp_path, digits_data_dir):
    workdir = tmp_path / "w"
    shutil.copytree(darts_reference, workdir)
    steps = _steps(workdir)
    assert steps == [STEPS - 4, STEPS - 2, STEPS]  # keep_checkpoints=3
    # flip bytes in every data file of the latest checkpoint (small arrays are
    # stored inline in the OCDBT b-tree nodes, larger ones in the data files)
    for name in glob.glob(str(workdir / "checkpoints" / str(STEPS) / "state" / "**" /
                              "d" / "*"), recursive=True):
        _flip_file(name)
    os.remove(workdir / "genotype.json")

    proc = _run(_command(DARTS, DARTS_SMALL, workdir), digits_data_dir)
    assert f"checkpoint at step {STEPS} is corrupt or unreadable" in proc.stderr
    assert f"resumed from the checkpoint at step {STEPS - 2}" in proc.stderr
    assert os.listdir(workdir / "checkpoints.corrupt") == [f"{STEPS}-0"]
    assert _steps(workdir)[-1] == STEPS  # written again
    a, b = _result(darts_reference), _result(workdir)
    assert a["arch"] == b["arch"] and a["genotype"] == b["genotype"]
    assert _metric_steps(workdir) == _metric_steps(darts_reference)


# The same detection at the Checkpointer level, for every kind of damage (fast:
# a small pytree, no supernet).

def _damage(step_dir, how):
    if how == "flipped bytes":
        _flip_bytes(step_dir)
    elif how == "truncated array file":
        files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_*", "d", "*"))
        biggest = max(files, key=os.path.getsize)
        with open(biggest, "r+b") as f:
            f.truncate(os.path.getsize(biggest) // 3)
    elif how == "missing metadata":
        os.remove(os.path.join(step_dir, "meta", "metadata"))
    elif how == "missing array metadata":
        os.remove(os.path.join(step_dir, "state", "_METADATA"))
    elif how == "missing manifest":
        os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))
    else:
        raise ValueError(how)


def _state(value: float):
    import jax
    import jax.numpy as jnp
    import optax

    # random values: the array data file is the largest file of the checkpoint
    params = {"w": jax.random.normal(jax.random.key(int(value)), (64, 32)),
              "b": jnp.arange(32.0) * value}
    return {"params": params, "opt": optax.adam(1e-3).init(params),
            "key": jax.random.key(int(value)), "step": jnp.int32(int(value))}


# orbax leaves a coroutine of the aborted state read behind when the metadata item fails
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["flipped bytes", "truncated array file",
                                 "missing metadata", "missing array metadata",
                                 "missing manifest"])
def test_checkpointer_skips_a_damaged_latest_checkpoint(tmp_path, caplog, how):
    import jax

    from jaxnas import checkpoint as ckpt_lib

    saver = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=3)
    for step in (1, 2, 3):
        saver.save(step, _state(float(step)), {"position": step})
    saver.close()
    _damage(tmp_path / "checkpoints" / "3", how)

    loader = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=3)
    with caplog.at_level(logging.WARNING, logger="jaxnas"):
        state, meta, step = loader.restore(_state(0.0))
    loader.close()
    assert step == 2 and meta["position"] == 2
    expected = _state(2.0)
    assert ckpt_lib.state_digest(state) == ckpt_lib.state_digest(expected)
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    assert any("checkpoint at step 3 is corrupt or unreadable" in r.message
               for r in caplog.records)
    if how == "flipped bytes":  # read without error by orbax: caught by the digest
        assert any("SHA-256 mismatch" in r.message for r in caplog.records)
    assert os.listdir(tmp_path / "checkpoints.corrupt") == ["3-0"]
    assert _steps(tmp_path) == [1, 2]


def test_checkpointer_with_no_sound_checkpoint_refuses_and_moves_nothing(tmp_path):
    from jaxnas import checkpoint as ckpt_lib

    saver = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=3)
    saver.save(1, _state(1.0), {"position": 1})
    saver.close()
    _damage(tmp_path / "checkpoints" / "1", "flipped bytes")
    loader = ckpt_lib.Checkpointer(str(tmp_path))
    with pytest.raises(ckpt_lib.NoSoundCheckpointError,
                       match="step 1: CorruptCheckpointError"):
        loader.restore(_state(0.0))
    loader.close()
    assert _steps(tmp_path) == [1]  # left in place for the user to inspect
    assert not os.path.exists(tmp_path / "checkpoints.corrupt")


def test_a_darts_workdir_from_before_the_state_key_is_refused_with_advice(
        tmp_path, digits_data_dir, monkeypatch, capsys):
    """A DARTS checkpoint written before the bilevel state carried its PRNG ``key``
    (that older layout written here: every field but ``key``) is refused on resume,
    saying what happened and what to do, and left in place."""
    import dataclasses

    import jax.numpy as jnp

    from jaxnas import checkpoint as ckpt_lib
    from jaxnas import cli
    from jaxnas import config as config_lib
    from jaxnas.strategies.bilevel import BilevelState

    monkeypatch.setenv("JAXNAS_DATA_DIR", digits_data_dir)
    config = config_lib.load_config(DARTS)
    config_lib.apply_overrides(config, [a[len("--config."):] for a in DARTS_SMALL])
    old_fields = [f.name for f in dataclasses.fields(BilevelState) if f.name != "key"]
    assert "key" not in old_fields and "alphas" in old_fields
    # shapes need not match: the layout is refused before any array is read
    old_state = {name: {"x": jnp.zeros((2,), jnp.float32)} for name in old_fields}
    workdir = tmp_path / "old"
    saver = ckpt_lib.Checkpointer(str(workdir))
    saver.save(2, old_state, {"config": config.to_dict(), "train_position": 2})
    saver.close()

    code = cli.main(["search", "--config", DARTS, "--workdir", str(workdir),
                     *DARTS_SMALL])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert "step 2" in err and "lacks 'key'" in err and "PRNG key" in err
    assert "another version of jaxnas" in err and "new --workdir" in err
    assert _steps(workdir) == [2]  # nothing moved aside or overwritten
    assert not os.path.exists(workdir / "checkpoints.corrupt")


def test_checkpointer_names_fields_a_checkpoint_has_that_the_state_lacks(tmp_path):
    from jaxnas import checkpoint as ckpt_lib

    saver = ckpt_lib.Checkpointer(str(tmp_path))
    saver.save(1, {**_state(1.0), "extra": np.zeros(3, np.float32)}, {"position": 1})
    saver.close()
    loader = ckpt_lib.Checkpointer(str(tmp_path))
    with pytest.raises(ckpt_lib.StateLayoutError, match=r"has 'extra' that this"):
        loader.restore(_state(0.0))
    loader.close()


# ----------------------------------------------------------------------------------
# Failing safely.


def test_a_non_finite_loss_stops_naming_step_and_quantity_keeping_good_checkpoints(
        tmp_path, digits_data_dir):
    proc = _run(_command(DARTS, DARTS_SMALL, tmp_path, "--config.optim.w_lr=1e30",
                         "--config.checkpoint_every=1"), digits_data_dir, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = [x for x in proc.stderr.splitlines() if "jaxnas search: error:" in x][0]
    assert " at step " in line and "last good checkpoint is kept" in line
    bad_step = int(line.split(" at step ")[1].split(";")[0].split(" ")[0])
    quantity = line.split("error: ")[1].split(" ")[0]
    # step 1 starts from finite weights (finite loss) and its lr of 1e30 makes them
    # ~1e30: the loss of step 2 overflows; the training loss is named first
    assert quantity == "train_loss" and "train_loss is nan" in line, line
    assert bad_step == 2, line
    steps = _steps(tmp_path)
    assert steps == [1] and max(steps) < bad_step  # the non-finite state was not saved
    assert not os.path.exists(tmp_path / "genotype.json")
    # what is kept restores, and is finite
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(os.path.join(tmp_path, "checkpoints"))
    restored = manager.restore(max(steps), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
    manager.close()
    import jax

    floats = [np.asarray(x) for x in jax.tree.leaves(restored["state"])
              if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)  # state.key
              and np.issubdtype(np.asarray(x).dtype, np.floating)]
    assert floats and all(np.all(np.isfinite(x)) for x in floats)


def test_errors_live_in_a_module_without_jax_and_old_paths_still_work():
    code = ("import sys; from jaxnas import cli, config, errors, search, train; "
            "print('jax' in sys.modules, any(m.startswith('jaxnas.runners') for m in "
            "sys.modules), config.ConfigError is errors.ConfigError)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]  # no jax, no runner
    from jaxnas import errors
    from jaxnas.runners import common

    assert common.NonFiniteError is errors.NonFiniteError
    assert common.DeviceOutOfMemoryError is errors.DeviceOutOfMemoryError
    assert common.Interrupted is errors.Interrupted


def test_check_finite_names_the_training_loss_first():
    from jaxnas import errors
    from jaxnas.runners import common

    with pytest.raises(errors.NonFiniteError) as e:
        common.check_finite(3, {"hypergrad_norm": float("inf"), "lr": 0.1,
                                "train_loss": float("nan"), "a": float("-inf")})
    assert str(e.value).startswith("train_loss is nan, a is -inf, hypergrad_norm is "
                                   "inf at step 3;")


def test_check_state_finite_names_the_bad_entries():
    import jax.numpy as jnp

    from jaxnas.runners import common

    common.check_state_finite(3, {"params": {"w": jnp.ones(3)}, "step": jnp.int32(3)})
    with pytest.raises(common.NonFiniteError) as e:
        common.check_state_finite(7, {"params": {"w": jnp.array([1.0, jnp.nan]),
                                                 "b": jnp.ones(2)}})
    assert "at step 7" in str(e.value) and "['params']['w']" in str(e.value)
    assert "not checkpointed" in str(e.value)
    with pytest.raises(common.NonFiniteError, match="train_loss is nan at step 5"):
        common.check_finite(5, {"train_loss": float("nan"), "lr": 0.1})


def test_out_of_memory_becomes_a_clear_message_suggesting_a_smaller_batch():
    import ml_collections

    from jaxnas.runners import common

    config = ml_collections.ConfigDict({"data": {"batch_size": 64},
                                        "oneshot": {"eval_batch_size": 250}})

    class XlaRuntimeError(RuntimeError):
        pass

    with pytest.raises(common.DeviceOutOfMemoryError) as e:
        with common.out_of_memory_report(config, ("data.batch_size",
                                                  "oneshot.eval_batch_size")):
            raise XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                  "allocate 17179869184 bytes.\nmore details")
    text = str(e.value)
    assert "ran out of memory" in text and "17179869184 bytes" in text
    assert "config.data.batch_size=64 (try --config.data.batch_size=32)" in text
    assert "oneshot.eval_batch_size=250" in text
    with pytest.raises(XlaRuntimeError, match="INTERNAL"):  # other errors pass through
        with common.out_of_memory_report(config):
            raise XlaRuntimeError("INTERNAL: something else")


def test_cli_reports_out_of_memory_and_non_finite_without_a_traceback(monkeypatch,
                                                                      capsys):
    from jaxnas import cli, search
    from jaxnas.runners import common

    for error, code in ((common.DeviceOutOfMemoryError("a device ran out of memory: "
                                                       "try a smaller batch"), 1),
                        (common.NonFiniteError("train_loss is nan at step 4"), 1),
                        (common.Interrupted(signal.SIGTERM, "stopped"), 143)):
        def fail(config, workdir, error=error):
            raise error

        monkeypatch.setattr(search, "run", fail)
        assert cli.main(["search", "--config", os.path.join(ROOT, DARTS),
                         "--workdir", "unused"]) == code
        err = capsys.readouterr().err
        if code == 1:
            assert f"jaxnas search: error: {error}" in err


@pytest.mark.parametrize("path", ["experiments/darts_digits.py",
                                  "experiments/darts_cifar10.py",
                                  "experiments/spos_digits.py",
                                  "experiments/fairnas_digits.py",
                                  "experiments/fairnas_cifar10.py"])
def test_every_search_config_exposes_and_documents_length_and_checkpoints(path):
    import importlib.util

    from jaxnas import config as config_lib
    from jaxnas import search

    config = config_lib.load_config(os.path.join(ROOT, path))
    config_lib.apply_overrides(config, ["num_steps=7", "checkpoint_every=3",
                                        "keep_checkpoints=2", "mesh.data=-1"])
    search.validate_config(config)
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "--config.num_steps" in module.__doc__
    assert "--config.checkpoint_every" in module.__doc__
