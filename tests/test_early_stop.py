"""DARTS+ / RobustDARTS early stop on scripted trajectories; the family's config
refusals (no compile)."""

import numpy as np
import pytest

from jaxnas import config as C
from jaxnas import methods
from jaxnas.errors import ConfigError
from jaxnas.strategies.early_stop import EarlyStop, count_skips

CONV = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)] * 4


def _w(order):
    """op weights of one edge ranked by `order` (first = largest)."""
    w = np.zeros(8)
    w[list(order)] = np.linspace(1.0, 0.1, len(order))
    return {"normal": w[None], "reduce": w[None]}


def test_skip_criterion_fires_at_the_second_skip_connect():
    stop = EarlyStop(max_skips=2)
    one = [("skip_connect", 0)] + CONV[1:]
    two = [("skip_connect", 0), ("skip_connect", 1)] + CONV[2:]
    assert count_skips(two) == 2
    assert stop.update(_w(range(8)), CONV) is None
    assert stop.update(_w(range(8)), one) is None
    assert "2 skip-connects" in stop.update(_w(range(8)), two)


def test_ranking_criterion_counts_consecutive_unchanged_evaluations():
    stop = EarlyStop(stable_epochs=3)
    a, b = range(8), [1, 0, 2, 3, 4, 5, 6, 7]
    script = [a, b, b, b, a, a, a, a]  # stable for 1, 2, then reset, then 1, 2, 3
    fired = [stop.update(_w(r), CONV) is not None for r in script]
    assert fired == [False, False, False, False, False, False, False, True]


def test_eigenvalue_criterion_compares_k_evaluations_back():
    stop = EarlyStop(eigen_ratio=0.75, eigen_epochs=2)
    evs = [1.0, 1.1, 1.2, 1.3, 1.8]  # ratios 1.0/1.2 = 0.83, 1.1/1.3 = 0.85, 1.2/1.8 = 0.67
    fired = [stop.update(_w(range(8)), CONV, ev) for ev in evs]
    assert fired[:4] == [None] * 4 and "RobustDARTS" in fired[4]
    with pytest.raises(ValueError):
        EarlyStop(eigen_ratio=0.5).update(_w(range(8)), CONV)


def test_history_saved_as_json_and_loaded_continues_like_an_uninterrupted_run():
    """What a checkpoint's meta keeps: a stopper rebuilt from it fires at the same
    evaluation as one that never stopped."""
    import json
    a, b = range(8), [1, 0, 2, 3, 4, 5, 6, 7]
    script = [(a, 1.0), (b, 1.0), (b, 1.1), (b, 1.2), (b, 1.3)]
    settings = dict(stable_epochs=3, eigen_ratio=0.5, eigen_epochs=1)
    whole = EarlyStop(**settings)
    want = [whole.update(_w(r), CONV, ev) for r, ev in script]
    first = EarlyStop(**settings)
    got = [first.update(_w(r), CONV, ev) for r, ev in script[:2]]
    second = EarlyStop(**settings)
    second.load(json.loads(json.dumps(first.to_json())))
    got += [second.update(_w(r), CONV, ev) for r, ev in script[2:]]
    assert got == want and want[-1] is not None and want[-2] is None


@pytest.mark.parametrize("name,key,value,allowed", [
    ("gdas", "gdas.tau_max", 0.0, "a positive number"),
    ("gdas", "gdas.tau_min", 50.0, "gdas.tau_min <= gdas.tau_max=10.0"),
    ("snas", "snas.tau_min", -1.0, "a positive number"),
    ("drnas", "drnas.anchor", 0.0, "a positive number"),
    ("darts_minus", "darts_minus.beta_max", 2.0, "[0.0, 1.0]"),
    ("fairdarts", "fairdarts.zero_one_weight", -1.0, "non-negative"),
])
def test_bad_family_values_are_refused_naming_key_value_and_allowed(name, key, value,
                                                                    allowed):
    config = C.load_config(f"experiments/{name}_digits.py")
    methods.validate(config)
    config.unlock()
    section, field = key.split(".")
    config[section][field] = value
    with pytest.raises(ConfigError) as e:
        methods.validate(config)
    assert f"config.{key}={value!r}" in str(e.value) and allowed in str(e.value)


def test_early_stop_section_is_validated():
    config = C.load_config("experiments/gdas_digits.py")
    config.unlock()
    config.early_stop = {"max_skips": 2, "stable_epochs": 0, "eigen_ratio": 1.5,
                         "eigen_epochs": 5, "eigen_batch": 32}
    with pytest.raises(ConfigError, match=r"early_stop.eigen_ratio=1.5"):
        methods.validate(config)
    config.early_stop.eigen_ratio = 0.75
    methods.validate(config)
