"""PC-DARTS and ProxylessNAS through `jaxnas search` (slow: real supernet compiles): a
4-step run of each config, interrupted after 2 and resumed, equals an uninterrupted one,
and writes the method and a genotype `jaxnas train` accepts."""

import json
import os
import subprocess
import sys

import pytest

SMALL = ["--config.model.layers=3", "--config.model.steps=2", "--config.model.multiplier=2",
         "--config.data.batch_size=16", "--config.log_every=2", "--config.eval_every=2",
         "--config.checkpoint_every=2", "--config.darts.warmup_epochs=0"]


def _search(config, workdir, data_dir, *extra):
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", "--config", config,
         "--workdir", str(workdir), *SMALL, *extra], capture_output=True, text=True,
        env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pcdarts", "proxyless"])
def test_search_resumes_bitwise(tmp_path, digits_data_dir, method):
    config = f"experiments/{method}_digits.py"
    _search(config, tmp_path / "full", digits_data_dir, "--config.num_steps=4")
    _search(config, tmp_path / "cut", digits_data_dir, "--config.num_steps=2")
    proc = _search(config, tmp_path / "cut", digits_data_dir, "--config.num_steps=4")
    assert "resumed from the checkpoint at step 2" in proc.stderr
    a = json.load(open(tmp_path / "full" / "genotype.json"))
    b = json.load(open(tmp_path / "cut" / "genotype.json"))
    assert a["method"] == method and a["arch"] == b["arch"]
    assert a["genotype"] == b["genotype"]
    if method == "pcdarts":
        assert set(a["arch"]) == {"normal", "reduce", "normal_edges", "reduce_edges"}
