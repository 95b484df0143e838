"""The README's Python API example (`jaxnas.search.run`, then `jaxnas.train.run`), run
as written at a tiny size, and what it returns and writes."""

from __future__ import annotations

import json
import math
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny sizes applied right after each config file loads (the README's own overrides
# then apply on top): one-node DARTS cells, grouped convolutions (seconds to compile).
TINY = {
    "experiments/darts_digits.py": [
        "model.channels=4", "model.layers=3", "model.steps=1", "model.multiplier=1",
        "model.impl=lax", "data.batch_size=16", "checkpoint_every=10"],
    "experiments/train_digits.py": [
        "model.channels=4", "model.layers=3", "model.auxiliary=false",
        "data.batch_size=16", "eval_every=0"],
}


def readme_api_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's Python API section has no python block"
    return blocks[0]


def test_readme_example_mentions_what_this_test_checks():
    code = readme_api_example()
    assert "search.run(" in code and "train.run(" in code
    assert "results[\"genotype\"]" in code and "result = train.run(" in code


def test_readme_api_example_runs_and_returns_a_valid_genotype(
        tmp_path, digits_data_dir, monkeypatch, capsys):
    from jaxnas import config as config_lib
    from jaxnas import spaces
    from jaxnas.spaces import genotypes

    monkeypatch.setenv("JAXNAS_DATA_DIR", digits_data_dir)
    load = config_lib.load_config
    loaded = []

    def load_tiny(path):  # the README's relative paths, from the repository root
        cfg = load(os.path.join(ROOT, path))
        config_lib.apply_overrides(cfg, TINY[path])
        loaded.append(path)
        return cfg

    monkeypatch.setattr(config_lib, "load_config", load_tiny)
    monkeypatch.chdir(tmp_path)  # its runs/... workdirs land here
    namespace: dict = {}
    exec(compile(readme_api_example(), "README.md", "exec"), namespace)
    assert loaded == list(TINY)

    results = namespace["results"]
    search_dir = tmp_path / "runs" / "api_search"
    # the returned genotype is a valid DARTS genotype, the one genotype.json holds
    arch = spaces.from_json(results["genotype"])
    assert spaces.space_of(arch).name == "darts"
    assert genotypes.validate(arch) == arch
    assert genotypes.from_str(results["genotype_str"]) == arch
    on_disk = json.load(open(search_dir / "genotype.json"))
    assert spaces.from_json(on_disk["genotype"]) == arch
    assert 0.0 <= results["final"]["val_accuracy"] <= 1.0
    # the README's overrides took effect: 20 steps, metrics every log_every
    records = [json.loads(line) for line in open(search_dir / "metrics.jsonl")]
    assert records and records[-1]["step"] == 20
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert json.load(open(search_dir / "config.json"))["model"]["channels"] == 4

    result = namespace["result"]
    assert result["steps"] == 20 and 0.0 <= result["test_accuracy"] <= 1.0
    # what it returns is what result.json holds (floats round-trip exactly in JSON)
    assert json.loads(json.dumps(result)) == json.load(
        open(tmp_path / "runs" / "api_train" / "result.json"))
    assert spaces.from_json(result["genotype"]) == arch  # retrained what was found
    out = capsys.readouterr().out
    assert results["genotype_str"] in out and str(result["test_accuracy"]) in out
