"""The zero-cost study: config refusals, Kendall tau by hand, a supernet path trained
alone = its discrete network retrained, and a tiny end-to-end run (slow)."""

from __future__ import annotations

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import config as config_lib
from jaxnas import proxies, search
from jaxnas.errors import ConfigError
from jaxnas.methods import zero_cost as zc_rules

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "experiments",
                       "zero_cost_digits.py")


def _config(*overrides):
    cfg = config_lib.load_config(EXAMPLE)
    config_lib.apply_overrides(cfg, list(overrides))
    return cfg


def test_rules_name_the_proxies_of_the_library():
    assert zc_rules.PROXY_NAMES == proxies.PROXIES


@pytest.mark.parametrize("override, match", [
    ("zero_cost.proxies=('synflow','zen')", "config.zero_cost.proxies"),
    ("zero_cost.num_archs=2", "config.zero_cost.num_archs=2"),
    ("zero_cost.proxy_batch=1", "config.zero_cost.proxy_batch=1"),
    ("optim.lr_min=1.0", "optim.lr_min"),
])
def test_bad_configs_refused_before_any_work(override, match):
    cfg = _config()
    key, value = override.split("=", 1)
    section, name = key.split(".")
    cfg[section][name] = eval(value)  # noqa: S307 - a literal of this test
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        search.validate_config(cfg)


def test_kendall_tau_by_counting_pairs():
    from jaxnas.runners.zero_cost import kendall_taus

    rng = np.random.default_rng(0)
    s, a = rng.normal(size=9), rng.normal(size=9)
    pairs = list(itertools.combinations(range(9), 2))
    concordant = sum(np.sign(s[i] - s[j]) == np.sign(a[i] - a[j]) for i, j in pairs)
    want = (2 * concordant - len(pairs)) / len(pairs)
    s_nan = s.copy()
    s_nan[0] = np.nan  # a non-finite score is left out, not ranked
    got = kendall_taus({"x": s, "y": s_nan}, a)
    assert got["x"]["tau"] == pytest.approx(want) and got["x"]["n"] == 9
    assert got["y"]["n"] == 8


def test_path_model_computes_the_discrete_network():
    """The study's PathModel (the supernet fixed to a traced path) gives its path's
    ChainNet logits and BatchNorm updates with the inherited weights (the slow test
    below: two retraining steps of both stay equal)."""
    from jaxnas.networks import chain as net_lib
    from jaxnas.runners.zero_cost import PathModel
    from jaxnas.spaces import chain as space_lib
    from jaxnas.supernet import chain as sn

    space = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                                 strides=(1, 2), head_channels=8, in_channels=1)
    model = PathModel(sn.ChainSupernet(space, 3), jnp.array([1, 4], jnp.int32))
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    v = jax.jit(model.init)(jax.random.key(1), x)
    net = net_lib.build_path_network(space, [1, 4], 3)
    nv = sn.extract_path_variables(space, v, [1, 4])
    (out, upd), (want, want_upd) = jax.jit(lambda v, nv: (
        model.apply(v, x, train=True, mutable=["batch_stats"]),
        net.apply(nv, x, train=True, mutable=["batch_stats"])))(v, nv)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-5, atol=1e-6)
    got_stats = sn.extract_path_variables(space, upd, [1, 4])["batch_stats"]
    for a, b in zip(jax.tree.leaves(got_stats), jax.tree.leaves(want_upd)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_supernet_path_trained_alone_is_its_discrete_network_retrained():
    """Two steps of the retraining recipe on the supernet fixed to a path (the
    study's PathModel) and on the path's ChainNet from the same initial weights give
    the same logits: the study retrains each path's discrete network."""
    from jaxnas.networks import chain as net_lib
    from jaxnas.runners import train as train_runner
    from jaxnas.runners.zero_cost import PathModel
    from jaxnas.spaces import chain as space_lib
    from jaxnas.supernet import chain as sn

    space = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                                 strides=(1, 2), head_channels=8, in_channels=1)
    path = jnp.array([1, 4], jnp.int32)
    supernet = sn.ChainSupernet(space, 3)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    batch = {"image": x, "label": jnp.arange(8) % 3}
    kw = dict(epochs=1, steps_per_epoch=2, lr=0.1, weight_decay=4e-5)
    tr_path = train_runner.trainer(PathModel(supernet, path), **kw)
    net = net_lib.build_path_network(space, [1, 4], 3)
    tr_net = train_runner.trainer(net, **kw)

    def run(tr, state):
        for _ in range(2):
            state, _ = tr.step(state, batch)
        return tr.evaluate(state, batch), state

    s0 = tr_path.init(jax.random.key(1), x[:1])
    v = sn.extract_path_variables(space, {"params": s0.params,
                                          "batch_stats": s0.batch_stats}, [1, 4])
    n0 = tr_net.init(jax.random.key(1), x[:1]).replace(
        params=v["params"], batch_stats=v["batch_stats"])
    # (n0's optimizer state is zero momentum of the same shapes: valid for v)
    (out_path, s1), (out_net, n1) = jax.jit(lambda s, n: (run(tr_path, s),
                                                          run(tr_net, n)))(s0, n0)
    np.testing.assert_allclose(float(out_path["loss_sum"]), float(out_net["loss_sum"]),
                               rtol=1e-5)
    after = sn.extract_path_variables(space, {"params": s1.params,
                                              "batch_stats": s1.batch_stats}, [1, 4])
    for a, b in zip(jax.tree.leaves(after["params"]), jax.tree.leaves(n1.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, digits_data_dir):
    cfg = _config("zero_cost.num_archs=3", "num_steps=2", "checkpoint_every=1",
                  f"data.data_dir={digits_data_dir}", "zero_cost.proxy_batch=8")
    results = search.run(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "zero_cost.json").read_text())
    assert saved["kendall_tau"] == results["kendall_tau"]
    assert set(saved["kendall_tau"]) == set(proxies.PROXIES) | {"params"}
    assert len(saved["archs"]) == 3 and saved["steps"] == 2
    for arch in saved["archs"]:
        assert 0.0 <= arch["test_accuracy"] <= 1.0
        assert all(np.isfinite(v) for v in arch["scores"].values())


def test_hardware_tables_by_hand_and_the_mnasnet_reward():
    from jaxnas import hardware
    from jaxnas.spaces import chain as space_lib

    space = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                                 strides=(1, 2), head_channels=8, in_channels=1)
    fixed, table = hardware.chain_macs_table(space, 3, 8)
    # stem 8*8*9*1*4; head at 4x4: 16*6*8; classifier 8*3
    assert fixed == 2304 + 768 + 24
    # layer 0, k3 e3 (h = 12) at 8x8: expand 64*4*12, dw 64*9*12, project 64*12*4
    assert table[0, 0] == 3072 + 6912 + 3072
    # layer 1, k7 e6 (h = 24), 8x8 -> 4x4: expand 64*4*24, dw 16*49*24, project 16*24*6
    assert table[1, 5] == 6144 + 18816 + 2304
    archs = np.array([[0, 5], [3, 1]], np.int32)
    cost = hardware.table_cost(*space_lib.param_table(space, 3))
    np.testing.assert_allclose(np.asarray(cost(jnp.asarray(archs))),
                               [space_lib.count_params(space, a, 3) for a in archs])
    with pytest.raises(ValueError, match="met by no architecture"):
        hardware.check_budget(fixed, table, budget=float(fixed))
    hardware.check_budget(fixed, table, budget=float(fixed + table.min(1).sum()))
    acc = jnp.array([0.9, 0.9])
    r = hardware.mnasnet_reward(acc, jnp.array([50.0, 200.0]), 100.0)
    np.testing.assert_allclose(np.asarray(r), [0.9 * 0.5 ** -0.07, 0.9 * 2 ** -0.07],
                               rtol=1e-6)
