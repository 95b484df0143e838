"""The proxy population search: refusals before any compile, regularized evolution
whose every evaluated and returned path meets the budget, and NSGA-II's written front
against a brute-force dominance check."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxnas import config as config_lib
from jaxnas import search
from jaxnas.errors import ConfigError
from jaxnas.spaces import chain as space_lib

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "experiments",
                       "nsga2_digits.py")
TINY = ("model.stem_channels=4", "model.widths=(4,6)", "model.depths=(1,1)",
        "model.strides=(1,2)", "model.head_channels=8", "population.proxy_batch=8",
        "population.proxy=synflow", "population.size=6", "population.sample_size=3",
        "population.batch_size=2", "population.rounds=3", "checkpoint_every=10")
SPACE = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                             strides=(1, 2), head_channels=8, in_channels=1)


def _config(*overrides):
    cfg = config_lib.load_config(EXAMPLE)
    config_lib.apply_overrides(cfg, list(overrides))
    return cfg


@pytest.mark.parametrize("override, match", [
    (("population.proxy=zen",), "config.population.proxy"),
    (("hardware.cost=latency",), "config.hardware.latency_table=''"),
    (("hardware.budget=5e4",), "config.hardware.budget=50000.0 is not allowed with "
                               "population.strategy='nsga2'"),
    (("population.sample_size=40",), "config.population.sample_size=40"),
])
def test_bad_configs_refused_before_any_work(override, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        search.validate_config(_config(*override))


def test_an_impossible_budget_is_refused_before_compiling(tmp_path, digits_data_dir,
                                                          monkeypatch):
    from jaxnas.runners import common
    from jaxnas.runners import proxy_search  # noqa: F401  (its imports compile nothing)

    def no_compile(*args, **kwargs):
        raise AssertionError("the search state was initialised (compiled)")

    monkeypatch.setattr(common, "init_state", no_compile)
    cfg = _config(*TINY, "population.strategy=evolution", "hardware.budget=100",
                  f"data.data_dir={digits_data_dir}")
    with pytest.raises(ConfigError, match="config.hardware.budget=100 is met by no "
                                          "architecture"):
        search.run(cfg, str(tmp_path))


def test_evolution_under_a_parameter_budget(tmp_path, digits_data_dir):
    fixed, table = space_lib.param_table(SPACE, 10)
    budget = float(fixed + np.median(table, axis=1).sum())  # about half the space
    cfg = _config(*TINY, "population.strategy=evolution",
                  f"hardware.budget={budget}", f"data.data_dir={digits_data_dir}")
    results = search.run(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "genotype.json").read_text())
    assert saved["evaluated"] == results["evaluated"]
    assert len(saved["evaluated"]) == 6 + 3 * 2
    # every evaluated path (resampled, so all scored) and the returned one: the exact
    # parameter count of its discrete network within the budget
    for e in saved["evaluated"] + [saved["best"]]:
        assert space_lib.count_params(SPACE, e["path"], 10) == e["cost"] <= budget
        assert np.isfinite(e["fitness"])
    assert saved["genotype"]["params"] <= budget
    assert saved["best"]["fitness"] == max(e["fitness"] for e in saved["evaluated"])
    assert (tmp_path / "pareto.png").exists() and (tmp_path / "pareto.pdf").exists()


def _brute_front(points: dict) -> set:
    """Distinct paths that no evaluated path dominates (max fitness, min cost)."""
    front = set()
    for a, (f, c) in points.items():
        if not any(f2 >= f and c2 <= c and (f2 > f or c2 < c)
                   for b, (f2, c2) in points.items() if b != a):
            front.add(a)
    return front


def test_nsga2_front_written_equals_the_brute_force_front(tmp_path, digits_data_dir):
    cfg = _config(*TINY, f"data.data_dir={digits_data_dir}")
    search.run(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "genotype.json").read_text())
    assert len(saved["evaluated"]) == 6 * (1 + 3)
    points = {tuple(e["path"]): (e["fitness"], e["cost"]) for e in saved["evaluated"]}
    for path, (_, cost) in points.items():
        assert space_lib.count_params(SPACE, path, 10) == cost
    written = {tuple(e["path"]): (e["fitness"], e["cost"]) for e in saved["front"]}
    # what is compared: the front of *every* evaluated path, by an O(N^2) loop
    assert set(written) == _brute_front(points)
    assert all(points[a] == v for a, v in written.items())
    # NSGA-II's elitism: while the front fits in the population (distinct paths), the
    # final population's rank-0 members are exactly that front
    final = {tuple(e["path"]) for e in saved["final_population"] if e["rank"] == 0}
    if len(written) <= 6:
        assert final == set(written)
        assert all(e["in_final_population"] for e in saved["front"])
    assert saved["genotype"]["path"] == list(max(written, key=lambda a: written[a][0]))
    assert (tmp_path / "pareto.png").exists()
