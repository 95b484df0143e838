"""The gradient-based family through `jaxnas search` (slow: real supernet compiles): a
GDAS search interrupted and resumed equals an uninterrupted one, and the DARTS+ early
stop ends a search from the loop's evaluation hook."""

import json
import os
import subprocess
import sys

import pytest

SMALL = ["--config.model.channels=4", "--config.model.layers=3",
         "--config.data.batch_size=16", "--config.log_every=2", "--config.eval_every=2",
         "--config.checkpoint_every=2", "--config.darts.warmup_epochs=0"]


def _search(workdir, data_dir, *extra):
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", "--config", "experiments/gdas_digits.py",
         "--workdir", str(workdir), *SMALL, *extra], capture_output=True, text=True,
        env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_gdas_search_resumes_bitwise_and_darts_plus_stops_early(tmp_path, digits_data_dir):
    _search(tmp_path / "full", digits_data_dir, "--config.num_steps=4")
    _search(tmp_path / "cut", digits_data_dir, "--config.num_steps=2")
    proc = _search(tmp_path / "cut", digits_data_dir, "--config.num_steps=4")
    assert "resumed from the checkpoint at step 2" in proc.stderr
    a = json.load(open(tmp_path / "full" / "genotype.json"))
    b = json.load(open(tmp_path / "cut" / "genotype.json"))
    assert a["method"] == "gdas" and a["arch"] == b["arch"] and a["genotype"] == b["genotype"]
    # an unchanged op ranking for one evaluation stops the search (a tiny alpha rate
    # keeps the ranking): evaluations at steps 2 and 4, so it ends at step 4 of 8
    _search(tmp_path / "stop", digits_data_dir, "--config.num_steps=8",
            "--config.optim.a_lr=1e-9", "--config.early_stop.stable_epochs=1")
    c = json.load(open(tmp_path / "stop" / "genotype.json"))
    assert c["steps"] == 4 and c["early_stop"]["step"] == 4
    assert "ranking" in c["early_stop"]["reason"]
