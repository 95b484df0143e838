"""Methods by config string: the registry, and rules that agree with the code."""

from __future__ import annotations

import os

import ml_collections
import pytest

from jaxnas import config as C
from jaxnas import methods, search
from jaxnas.methods import oneshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DARTS = os.path.join(ROOT, "experiments/darts_digits.py")


def test_darts_rules_accept_exactly_what_the_code_accepts():
    from jaxnas.strategies import darts as strategy
    from jaxnas.supernet import darts as supernet
    from jaxnas.supernet import kernels

    for key, values in (("model.mixed_op", supernet.MIXED_OPS),
                        ("model.impl", kernels.IMPLS),
                        ("darts.estimator", strategy.ESTIMATORS)):
        from jaxnas.methods import supernets
        rule = {**methods.get("darts").rules, **supernets.MODEL_RULES["darts"]}[key]
        assert all(rule.check(v) for v in values), key
        assert not rule.check("nope")
        for v in values:  # the whole config validates with each of them
            config = C.load_config(DARTS)
            C.apply_overrides(config, [f"{key}={v}"])
            search.validate_config(config)
    assert "scan" in supernet.MIXED_OPS  # the supernet's default, refused before


def test_chain_rules_accept_exactly_what_the_supernet_accepts():
    from jaxnas.supernet import chain

    for method in ("spos", "fairnas"):
        rules = {**methods.get(method).rules, **oneshot.MODEL_RULES["chain"]}
        assert [v for v in chain.IMPLS if rules["model.impl"].check(v)] == list(
            chain.IMPLS)
        assert [v for v in chain.DISPATCHES if rules["model.dispatch"].check(v)] == list(
            chain.DISPATCHES)
        assert not rules["model.impl"].check("nope")


def test_unknown_method_is_refused_naming_the_registered_ones():
    config = C.load_config(DARTS)
    with config.unlocked():
        config.method = "darts2"
    with pytest.raises(C.ConfigError) as e:
        search.validate_config(config)
    assert "config.method='darts2'" in str(e.value)
    for name in ("'darts'", "'spos'", "'fairnas'"):
        assert name in str(e.value)


def test_a_registered_method_is_validated_by_its_own_rules():
    rule = C.Rule(lambda v: v in (1, 2), "1 or 2")
    seen = []
    toy = methods.register(methods.Method(
        name="toy_test_method", title="Toy", rules={"toy.k": rule},
        loop="jaxnas.runners.darts", check=lambda config: seen.append(config.toy.k)))
    try:
        config = C.load_config(DARTS)
        with config.unlocked():
            config.method = "toy_test_method"
            config.toy = ml_collections.ConfigDict({"k": 2})
        assert search.validate_config(config) is None and seen == [2]
        config.toy.k = 3
        with pytest.raises(C.ConfigError, match=r"config.toy.k=3 is not allowed: "
                           r"expected 1 or 2"):
            search.validate_config(config)
        with config.unlocked():
            del config["toy"]
        with pytest.raises(C.ConfigError, match="'toy.k' is missing"):
            search.validate_config(config)
        assert methods.get("toy_test_method") is toy
    finally:
        methods._REGISTRY.pop("toy_test_method")


def test_code_constant_reads_literals_follows_reexports_and_imports_the_rest(
        tmp_path, monkeypatch):
    pkg = tmp_path / "ccpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("NAMES = ('x', 'y')\nTABLE = {'p': len, 'q': abs}\n"
                              "COMPUTED = tuple(TABLE)\n")
    (pkg / "b.py").write_text("from ccpkg.a import NAMES  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert C.code_constant("ccpkg.a", "NAMES") == ("x", "y")
    assert C.code_constant("ccpkg.a", "TABLE") == ("p", "q")  # a dict's keys
    assert C.code_constant("ccpkg.b", "NAMES") == ("x", "y")  # through the import
    assert C.code_constant("ccpkg.a", "COMPUTED") == ("p", "q")  # imported
