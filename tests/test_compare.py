"""`jaxnas compare`: random architectures of a space, the summary, the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from jaxnas import compare
from jaxnas.spaces import chain as space_lib
from jaxnas.spaces import genotypes


def _chain(path=(5, 0, 3, 1, 4, 2)):
    return space_lib.ChainGenotype(space_lib.digits_space(), tuple(path), 10)


def test_random_darts_genotypes_valid_uniform_and_seeded():
    archs = compare.random_architectures(genotypes.DARTS_V2, 400, seed=3)
    ops, inputs = Counter(), Counter()
    for g in archs:
        genotypes.validate(g, steps=4, allowed_ops=genotypes.PRIMITIVES[1:])
        assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
        for cell in (g.normal, g.reduce):
            for node in range(4):
                a, b = cell[2 * node], cell[2 * node + 1]
                assert a[1] != b[1]  # two distinct inputs per node, as in DARTS
                inputs[(node, a[1])] += 1
                inputs[(node, b[1])] += 1
            ops.update(op for op, _ in cell)
    assert set(ops) == set(genotypes.PRIMITIVES[1:])  # every op but none
    freq = np.array(list(ops.values())) / sum(ops.values())
    np.testing.assert_allclose(freq, 1 / 7, atol=0.02)
    # node 3 picks 2 of its 5 inputs: each input with probability 2/5
    for i in range(5):
        assert abs(inputs[(3, i)] / 800 - 0.4) < 0.06
    # a searched genotype concatenating fewer nodes (model.multiplier < steps) gets
    # random ones of that space
    fewer = genotypes.DARTS_V2._replace(normal_concat=(4, 5), reduce_concat=(3, 4, 5))
    for g in compare.random_architectures(fewer, 3, seed=0):
        assert g.normal_concat == (4, 5) and g.reduce_concat == (3, 4, 5)
    assert compare.random_architectures(genotypes.DARTS_V2, 5, seed=3) == archs[:5]
    assert compare.random_architectures(genotypes.DARTS_V2, 5, seed=4) != archs[:5]


def test_random_chain_paths_keep_the_space():
    arch = _chain()
    archs = compare.random_architectures(arch, 300, seed=0)
    counts = np.zeros((6, max(arch.space.num_choices)))
    for a in archs:
        assert a.space == arch.space and a.num_classes == 10
        space_lib.check_path(a.space, a.path)
        for layer, c in enumerate(a.path):
            counts[layer, c] += 1
    np.testing.assert_allclose(counts / 300, 1 / 6, atol=0.07)
    assert compare.random_architectures(arch, 0, seed=0) == []
    with pytest.raises(ValueError, match="expected >= 0, got -1"):
        compare.random_architectures(arch, -1, seed=0)
    with pytest.raises(ValueError, match="random architectures: expected >= 0, got -2"):
        compare.random_architectures(arch, 1, seed=-2)


def test_summary_ranks_the_searched_architecture():
    def r(acc, loss, n=100):
        return {"test_accuracy": acc, "test_loss": loss, "num_params": n}

    runs = {"searched": [r(0.9, 0.3), r(0.8, 0.5)],      # mean 0.85, loss 0.4
            "random0": [r(0.9, 0.2), r(0.9, 0.2)],       # 0.90: better
            "random1": [r(0.7, 0.9), r(0.8, 0.7)],       # 0.75: worse
            "random2": [r(0.85, 0.4), r(0.85, 0.4)]}     # 0.85: a tie, not beaten
    s = compare.summarize(runs)
    assert s["architectures"]["searched"]["accuracy_mean"] == pytest.approx(0.85)
    assert s["architectures"]["searched"]["accuracy_std"] == pytest.approx(0.05)
    assert s["architectures"]["random1"]["loss_mean"] == pytest.approx(0.8)
    assert s["random_accuracy_mean"] == pytest.approx((0.9 + 0.75 + 0.85) / 3)
    assert s["random_loss_mean"] == pytest.approx((0.2 + 0.8 + 0.4) / 3)
    assert s["searched_rank"] == 2 and s["random_beaten"] == 1
    assert s["num_random"] == 3 and s["beats_random_mean"] is True
    assert "searched: accuracy 0.8500" in compare.format_table(s)
    assert "searched_rank" not in compare.summarize({"searched": runs["searched"]})


def test_parse_seeds():
    assert compare.parse_seeds("0,1,7") == [0, 1, 7]
    with pytest.raises(ValueError, match="'x'"):
        compare.parse_seeds("0,x")
    with pytest.raises(ValueError, match="repeated"):
        compare.parse_seeds("1,1")
    with pytest.raises(ValueError, match="non-negative, got '0,-1'"):
        compare.parse_seeds("0,-1")


def _compare(tmp_path, data_dir, *extra):
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(_chain().to_json()))
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    return subprocess.run(
        [sys.executable, "-m", "jaxnas", "compare", "--genotype", str(genotype),
         "--config", "experiments/train_chain_digits.py", "--workdir",
         str(tmp_path / "cmp"), "--config.num_steps=2", "--config.data.batch_size=16",
         "--config.eval_every=0", *extra], capture_output=True, text=True, env=env,
        timeout=900)


def test_compare_cli_bad_arguments_named(tmp_path, digits_data_dir):
    proc = _compare(tmp_path, digits_data_dir, "--random", "0")
    assert proc.returncode == 2 and "--random must be at least 1 (got 0)" in proc.stderr
    proc = _compare(tmp_path, digits_data_dir, "--seeds", "0,a")
    assert proc.returncode == 2 and "'a'" in proc.stderr
    proc = _compare(tmp_path, digits_data_dir, "--random-seed", "-1")
    assert proc.returncode == 2 and "--random-seed must be non-negative" in proc.stderr
    proc = _compare(tmp_path, digits_data_dir, "--config.model.channels=4")
    assert proc.returncode == 2 and "model.channels" in proc.stderr


@pytest.mark.slow
def test_compare_end_to_end_and_resumes(tmp_path, digits_data_dir):
    proc = _compare(tmp_path, digits_data_dir, "--random", "1", "--seeds", "0,1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.load(open(tmp_path / "cmp" / "comparison.json"))
    assert set(out["architectures"]) == {"searched", "random0"}
    assert out["genotypes"]["searched"] == _chain().to_json()
    for name in ("searched", "random0"):
        row = out["architectures"][name]
        results = [json.load(open(tmp_path / "cmp" / name / f"seed{s}" / "result.json"))
                   for s in (0, 1)]
        assert row["test_accuracy"] == [r["test_accuracy"] for r in results]
        assert [r["steps"] for r in results] == [2, 2]
    # a second call finds every run done and recomputes the same table
    before = {p: os.path.getmtime(p) for p in
              (tmp_path / "cmp").glob("*/seed*/result.json")}
    proc = _compare(tmp_path, digits_data_dir, "--random", "1", "--seeds", "0,1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.load(open(tmp_path / "cmp" / "comparison.json")) == out
    assert {p: os.path.getmtime(p) for p in before} == before
    assert "rank" in proc.stdout
    # the same workdir with other random architectures, or another recipe, is refused
    # before anything is trained or written
    proc = _compare(tmp_path, digits_data_dir, "--random", "1", "--seeds", "0,1",
                    "--random-seed", "5")
    assert proc.returncode == 2 and "random0" in proc.stderr
    assert "another architecture" in proc.stderr
    proc = _compare(tmp_path, digits_data_dir, "--random", "1", "--seeds", "0,1",
                    "--config.num_steps=3")
    assert proc.returncode == 2 and "another recipe" in proc.stderr
    assert "num_steps" in proc.stderr
    assert json.load(open(tmp_path / "cmp" / "comparison.json")) == out
    assert {p: os.path.getmtime(p) for p in before} == before
