"""`jaxnas train` with chain-space (SPOS / FairNAS) genotypes: configs, resolution, e2e."""

from __future__ import annotations

import json
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


def test_train_a_chain_path_end_to_end(tmp_path, digits_data_dir):
    genotype = _genotype_file(tmp_path)
    proc = _train(genotype, tmp_path / "run", digits_data_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.load(open(tmp_path / "run" / "result.json"))
    space = space_lib.digits_space()
    # the parameter count of the trained network's own tree equals the closed form
    assert result["num_params"] == space_lib.count_params(space, PATH, 10)
    assert result["num_params_with_auxiliary"] == result["num_params"]
    assert result["genotype"] == space_lib.genotype_to_json(space, PATH, 10)
    assert result["genotype_str"].split() == space_lib.path_names(PATH)
    assert result["steps"] == 3 and 0.0 <= result["test_accuracy"] <= 1.0
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["drop_path_prob"] == 0.0 for r in records)
    # the training loss goes down over three steps on the same schedule
    assert records[-1]["train_loss"] < records[0]["train_loss"] + 1.0


def test_chain_genotype_for_other_images_refused(tmp_path, digits_data_dir):
    genotype = _genotype_file(tmp_path, space_lib.digits_space(in_channels=3))
    proc = _train(genotype, tmp_path / "run", digits_data_dir)
    assert proc.returncode == 2
    assert re.search(r"takes 3-channel images, but \S*digits has 1", proc.stderr)
    assert not (tmp_path / "run" / "result.json").exists()
