"""`jaxnas search` for FairNAS / SPOS on the digits: results, resume, config checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxnas import config as config_lib
from jaxnas import search

CONFIG = "experiments/fairnas_digits.py"
# A tiny space and evolution keep the compiles short; the persistent XLA cache set up
# in conftest.py lets the later runs reuse the first run's compilations.
SMALL = ["--config.model.stem_channels=4", "--config.model.widths=(4, 8)",
         "--config.model.depths=(1, 1)", "--config.model.strides=(1, 2)",
         "--config.model.head_channels=8", "--config.data.batch_size=16",
         "--config.log_every=2", "--config.eval_every=4", "--config.checkpoint_every=2",
         "--config.oneshot.calib_batches=2", "--config.oneshot.eval_paths=2",
         "--config.oneshot.eval_batch_size=32", "--config.oneshot.val_examples=64",
         "--config.evolution.population_size=4", "--config.evolution.sample_size=2",
         "--config.evolution.num_cycles=4", "--config.evolution.batch_size=4"]
KEYS = {"method", "genotype", "path", "path_names", "fitness", "params",
        "supernet_test_accuracy", "random_fitness_mean", "search", "evolution",
        "training_counts", "steps", "weights_sha256", "timing"}


def _search(workdir, data_dir, *extra, config=CONFIG, check=True):
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", "--config", config, "--workdir",
         str(workdir), *SMALL, *extra], capture_output=True, text=True, env=env,
        timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, digits_data_dir):
    workdir = tmp_path_factory.mktemp("fairnas")
    _search(workdir, digits_data_dir, "--config.num_steps=6")
    return workdir


def test_fairnas_search_writes_every_result(full_run):
    assert {"config.json", "metrics.jsonl", "genotype.json", "checkpoints",
            "evolution.png"} <= set(os.listdir(full_run))
    result = json.load(open(full_run / "genotype.json"))
    assert KEYS <= set(result)
    assert result["method"] == "fairnas" and result["steps"] == 6
    assert len(result["path"]) == 2 and all(0 <= c < 6 for c in result["path"])
    assert result["genotype"]["type"] == "chain"
    assert result["genotype"]["path"] == result["path"]
    assert result["params"] == result["genotype"]["params"] > 0
    assert 0.0 <= result["fitness"] <= 1.0
    assert result["training_counts"] == [[6] * 6] * 2  # strict fairness
    assert result["search"]["evaluations"] == 8
    assert result["evolution"]["evaluations"] == [4, 8]
    records = [json.loads(line) for line in open(full_run / "metrics.jsonl")]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert "val_accuracy" in records[1]
    config = json.load(open(full_run / "config.json"))
    assert config["method"] == "fairnas" and config["model"]["widths"] == [4, 8]


@pytest.mark.slow
def test_interrupted_search_resumes_to_the_identical_result(full_run, tmp_path,
                                                            digits_data_dir):
    _search(tmp_path, digits_data_dir, "--config.num_steps=3")
    assert json.load(open(tmp_path / "genotype.json"))["steps"] == 3
    proc = _search(tmp_path, digits_data_dir, "--config.num_steps=6")
    assert "resumed from the checkpoint at step 3" in proc.stderr
    a = json.load(open(full_run / "genotype.json"))
    b = json.load(open(tmp_path / "genotype.json"))
    assert a["weights_sha256"] == b["weights_sha256"]  # bitwise equal weights
    assert a["path"] == b["path"] and a["fitness"] == b["fitness"]
    assert a["evolution"] == b["evolution"]
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [2, 3, 4, 6]


@pytest.mark.slow
def test_spos_search_runs_end_to_end(tmp_path, digits_data_dir):
    _search(tmp_path, digits_data_dir, "--config.num_steps=4",
            "--config.evolution.method=random", config="experiments/spos_digits.py")
    result = json.load(open(tmp_path / "genotype.json"))
    assert result["method"] == "spos" and result["search"]["method"] == "random"
    assert [sum(row) for row in result["training_counts"]] == [4, 4]


def _config(path: str, **overrides):
    config = config_lib.load_config(path)
    config_lib.apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
    return config


@pytest.mark.parametrize("path", ["experiments/spos_digits.py",
                                  "experiments/fairnas_digits.py",
                                  "experiments/fairnas_cifar10.py"])
def test_experiment_configs_validate(path):
    search.validate_config(_config(path))


@pytest.mark.parametrize("key,value,allowed", [
    ("model.dispatch", "loop", "'gather', 'switch'"),
    ("model.strides", "(1, 3, 2)", "1s and 2s"),
    ("evolution.method", "anneal", "'evolution', 'random'"),
    ("evolution.population_size", "0", "positive integer"),
    ("oneshot.calib_batches", "0", "positive integer"),
    ("fairnas.shared_batch", "maybe", "boolean"),
])
def test_bad_values_are_refused_naming_key_value_and_allowed(key, value, allowed):
    with pytest.raises(config_lib.ConfigError) as e:
        search.validate_config(_config(CONFIG, **{key: value}))
    assert key in str(e.value) and allowed in str(e.value)


def test_cross_key_errors_are_refused_before_any_work(tmp_path):
    from jaxnas.runners import oneshot as runner

    config = _config(CONFIG, **{"evolution.sample_size": 20})
    search.validate_config(config)
    with pytest.raises(config_lib.ConfigError, match="evolution.sample_size=20"):
        runner.run(config, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_fairnas_path_axis_must_divide_the_spaces_choice_count():
    from types import SimpleNamespace

    from jaxnas.runners import oneshot as runner

    config = config_lib.load_config(CONFIG)
    # check_mesh reads only mesh.shape before it refuses: no devices needed
    with pytest.raises(config_lib.ConfigError,
                       match=r"mesh.path=4 does not divide the 6 strictly fair paths"
                       r".*use 1, 2, 3 or 6"):
        runner.check_mesh(config, SimpleNamespace(shape={"data": 1, "path": 4,
                                                         "pop": 1}))
    config.method = "spos"
    with pytest.raises(config_lib.ConfigError, match=r"only FairNAS"):
        runner.check_mesh(config, SimpleNamespace(shape={"data": 1, "path": 2,
                                                         "pop": 1}))
