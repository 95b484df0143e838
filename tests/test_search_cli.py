"""End-to-end `jaxnas search` on the embedded digits: results, resume, refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

CONFIG = "experiments/darts_digits.py"
# A small supernet keeps the compile short; the persistent XLA cache set up in
# conftest.py lets the later runs reuse the first run's compilation.
SMALL = ["--config.model.channels=4", "--config.model.layers=3",
         "--config.data.batch_size=16", "--config.log_every=2", "--config.eval_every=4",
         "--config.checkpoint_every=2",
         "--config.darts.warmup_epochs=0"]  # the alphas move from the first step


def _search(workdir, data_dir, *extra, check=True):
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", "--config", CONFIG, "--workdir",
         str(workdir), *SMALL, *extra], capture_output=True, text=True, env=env,
        timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, digits_data_dir):
    workdir = tmp_path_factory.mktemp("full")
    _search(workdir, digits_data_dir, "--config.num_steps=6")
    return workdir


def test_search_writes_every_result(full_run):
    files = set(os.listdir(full_run))
    assert {"config.json", "metrics.jsonl", "genotype.json", "checkpoints",
            "arch_weights.png", "arch_evolution.png"} <= files
    result = json.load(open(full_run / "genotype.json"))
    assert result["steps"] == 6
    for cell in ("normal", "reduce"):
        assert np.asarray(result["arch"][cell]).shape == (14, 8)
        w = np.asarray(result["arch_weights"][cell])
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)
    assert result["genotype_str"].startswith("Genotype(normal=[(")
    records = [json.loads(line) for line in open(full_run / "metrics.jsonl")]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert "val_accuracy" in records[1] and "arch_weights" in records[1]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    config = json.load(open(full_run / "config.json"))
    assert config["model"]["channels"] == 4 and config["num_steps"] == 6


def test_interrupted_search_resumes_to_the_identical_result(full_run, tmp_path,
                                                            digits_data_dir):
    _search(tmp_path, digits_data_dir, "--config.num_steps=3")
    assert json.load(open(tmp_path / "genotype.json"))["steps"] == 3
    proc = _search(tmp_path, digits_data_dir, "--config.num_steps=6")
    assert "resumed from the checkpoint at step 3" in proc.stderr
    a = json.load(open(full_run / "genotype.json"))
    b = json.load(open(tmp_path / "genotype.json"))
    assert a["arch"] == b["arch"]  # bitwise: the same floats printed the same way
    assert a["genotype"] == b["genotype"]
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [2, 3, 4, 6]  # step 3 is the end of the first run; none twice


@pytest.mark.parametrize("override, named", [
    ("--config.optim.w_lr=0.05", "optim.w_lr (checkpoint 0.025, now 0.05)"),
    # a different shape of state: refused before any restore is tried
    ("--config.model.channels=6", "model.channels (checkpoint 4, now 6)"),
])
def test_resume_with_a_different_search_config_is_refused(full_run, digits_data_dir,
                                                          override, named):
    before = open(full_run / "config.json").read()
    proc = _search(full_run, digits_data_dir, "--config.num_steps=8", override,
                   check=False)
    assert proc.returncode == 2
    assert named in proc.stderr
    assert open(full_run / "config.json").read() == before  # nothing overwritten


def test_missing_dataset_fails_at_once_naming_it(tmp_path):
    env = dict(os.environ, JAXNAS_DATA_DIR=str(tmp_path / "empty"))
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", "--config", CONFIG, "--workdir",
         str(tmp_path / "w"), "--config.data.dataset=cifar10"], capture_output=True,
        text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "cifar10" in proc.stderr and "download_and_prepare" in proc.stderr
