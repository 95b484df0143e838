"""`jaxnas train` with chain-space (SPOS / FairNAS) genotypes: configs, resolution, e2e."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from jaxnas import config as C
from jaxnas import train
from jaxnas.spaces import chain as space_lib
from jaxnas.spaces import genotypes, resolve

CONFIG = "experiments/train_chain_digits.py"
PATH = (5, 0, 3, 1, 4, 2)


def _genotype_file(tmp_path, space=None, wrap=True):
    space = space or space_lib.digits_space()
    obj = space_lib.genotype_to_json(space, PATH, 10)
    if wrap:  # shaped like the genotype.json of a SPOS / FairNAS search
        obj = {"method": "fairnas", "genotype": obj, "path": list(PATH)}
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(obj))
    return str(path)


def test_chain_config_valid_and_kinds_not_mixed():
    train.validate_config(C.load_config(CONFIG), "chain")
    with pytest.raises(C.ConfigError, match=r"'model.channels'.*belong to darts.*"
                       r"train_chain_digits.py"):
        train.validate_config(C.load_config("experiments/train_digits.py"), "chain")
    with pytest.raises(C.ConfigError, match=r"model.bn_momentum.*belong to chain"):
        train.validate_config(C.load_config(CONFIG), "darts")
    cfg = C.load_config(CONFIG)
    cfg.model.bn_momentum = 1.5
    with pytest.raises(C.ConfigError, match=r"model.bn_momentum=1.5"):
        train.validate_config(cfg, "chain")


def test_resolve_chain_and_darts_genotypes(tmp_path):
    for wrap in (True, False):
        arch = resolve.resolve_architecture(_genotype_file(tmp_path, wrap=wrap))
        assert isinstance(arch, space_lib.ChainGenotype)
        assert arch.path == PATH and arch.num_classes == 10
        assert arch.space == space_lib.digits_space()
        assert resolve.kind(arch) == "chain"
        assert resolve.describe(arch).split() == space_lib.path_names(PATH)
        assert resolve.to_json(arch)["params"] == space_lib.count_params(
            arch.space, PATH, 10)
    assert resolve.resolve_architecture("DARTS_V2") == genotypes.DARTS_V2
    assert resolve.kind(genotypes.DARTS_V2) == "darts"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "chain", "path": [0] * 6}))
    with pytest.raises(ValueError, match=r"bad.json.*malformed chain genotype"):
        resolve.resolve_architecture(str(bad))
    obj = space_lib.genotype_to_json(space_lib.digits_space(), PATH, 10)
    obj["path"] = [0, 9, 0, 0, 0, 0]
    bad.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=r"choice indices in \[0, 6\)"):
        resolve.resolve_architecture(str(bad))


def _train(genotype, workdir, data_dir, *extra):
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    return subprocess.run(
        [sys.executable, "-m", "jaxnas", "train", "--genotype", genotype, "--config",
         CONFIG, "--workdir", str(workdir), "--config.num_steps=3",
         "--config.data.batch_size=16", "--config.log_every=1",
         "--config.eval_every=0", *extra], capture_output=True, text=True, env=env,
        timeout=900)


STEPS = 40  # batch 16: well inside the first of the recipe's epochs (lr near 0.1)


def _recompute_test_metrics(workdir, result, data_dir):
    """Test loss and accuracy of the final checkpoint's weights, computed here: the
    checkpoint read by orbax without a target, the network applied to the whole test
    split at once, cross entropy and accuracy in float64 numpy."""
    import ml_collections
    import numpy as np
    import orbax.checkpoint as ocp

    from jaxnas import data as data_lib
    from jaxnas import spaces

    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    state = manager.restore(result["steps"], args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    manager.close()
    arch = spaces.from_json(result["genotype"])
    model = spaces.space_of(arch).network(
        arch, num_classes=10, model=ml_collections.ConfigDict({"bn_momentum": 0.9}))
    test = data_lib.load_split("digits", "test", data_dir)
    mean, std = data_lib.DATASET_STATS[data_lib.DIGITS]
    images = (test.images.astype(np.float64) / 255 - mean) / std
    logits = np.asarray(model.apply({"params": state["params"],
                                     "batch_stats": state["batch_stats"]},
                                    images.astype(np.float32), train=False), np.float64)
    top = logits.max(-1, keepdims=True)
    log_z = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[:, 0]
    labels = np.asarray(test.labels)
    loss = float(np.mean(log_z - logits[np.arange(len(labels)), labels]))
    return loss, float(np.mean(np.argmax(logits, -1) == labels)), len(labels)


def test_train_a_chain_path_end_to_end(tmp_path, digits_data_dir):
    genotype = _genotype_file(tmp_path)
    proc = _train(genotype, tmp_path / "run", digits_data_dir,
                  f"--config.num_steps={STEPS}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.load(open(tmp_path / "run" / "result.json"))
    space = space_lib.digits_space()
    # the parameter count of the trained network's own tree equals the closed form
    assert result["num_params"] == space_lib.count_params(space, PATH, 10)
    assert result["num_params_with_auxiliary"] == result["num_params"]
    assert result["genotype"] == space_lib.genotype_to_json(space, PATH, 10)
    assert result["genotype_str"].split() == space_lib.path_names(PATH)
    assert result["steps"] == STEPS and 0.0 <= result["test_accuracy"] <= 1.0
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(r["drop_path_prob"] == 0.0 for r in records)
    # it learns: a uniform guess has loss log(10) = 2.30; the last ten steps average
    # clearly below it, and well below the first step's loss
    first = records[0]["train_loss"]
    last = sum(r["train_loss"] for r in records[-10:]) / 10
    assert last < math.log(10) - 0.5 and last < first - 0.5, (first, last)
    # the stored test figures are those of the final weights, recomputed here
    loss, accuracy, n = _recompute_test_metrics(tmp_path / "run", result,
                                                digits_data_dir)
    assert abs(result["test_accuracy"] - accuracy) < 0.5 / n  # the same count
    assert abs(result["test_loss"] - loss) < 1e-4 * max(1.0, loss)
    # above a guess (0.1) by more than three binomial standard deviations (the
    # BatchNorm running averages of 40 steps still lag the weights)
    assert result["test_accuracy"] > 0.1 + 3 * math.sqrt(0.1 * 0.9 / n)


def test_chain_genotype_for_other_images_refused(tmp_path, digits_data_dir):
    genotype = _genotype_file(tmp_path, space_lib.digits_space(in_channels=3))
    proc = _train(genotype, tmp_path / "run", digits_data_dir)
    assert proc.returncode == 2
    assert re.search(r"takes 3-channel images, but \S*digits has 1", proc.stderr)
    assert not (tmp_path / "run" / "result.json").exists()
