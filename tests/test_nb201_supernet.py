"""The NAS-Bench-201 supernet (`jaxnas.supernet.nb201`): a one-hot path is the discrete
`TinyNetwork` of that arch (weights mapped, parameter count by the space's closed form),
op weights enter a cell linearly, `none` adds nothing; registered as a bilevel space."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxnas.errors import ConfigError
from jaxnas.methods import supernets as supernet_rules
from jaxnas.networks.nb201 import TinyNetwork
from jaxnas.runners import supernets
from jaxnas.spaces import nb201
from jaxnas.supernet.nb201 import (NB201Supernet, SearchCell, as_weights,
                                   extract_network_variables, uniform_arch)

X = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
# each has every op, `none` included; the fast test checks the first
ARCHS = [(1, 4, 0, 2, 3, 3), (0, 1, 2, 3, 4, 2)]


@functools.lru_cache(maxsize=None)
def _supernet(mixed_op: str, affine: bool, N: int = 1):
    model = NB201Supernet(C=4, N=N, num_classes=10, mixed_op=mixed_op, affine=affine)
    variables = jax.jit(model.init)(jax.random.key(1), X, uniform_arch())
    # one compile per formulation serves every arch (the arch is an input)
    train = jax.jit(lambda v, a: model.apply(v, X, a, train=True,
                                             mutable=["batch_stats"]))
    evaluate = jax.jit(lambda v, a: model.apply(v, X, a, train=False))
    return model, variables, train, evaluate


@pytest.mark.parametrize("mixed_op, affine, N", [
    ("loop", False, 1),
    # the fused layout, and two cells a stage (the cell numbering of the mapping):
    # the fused cell compiles ~8x slower than the loop one on the shared CPU
    pytest.param("fused", True, 2, marks=pytest.mark.slow)])
def test_a_one_hot_path_is_the_discrete_network_of_its_arch(mixed_op, affine, N):
    model, variables, train, evaluate = _supernet(mixed_op, affine, N)
    # running statistics away from their init, so that eval mode compares them too
    _, upd = train(variables, jnp.asarray(uniform_arch()))
    variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
    for ops in ARCHS if N > 1 else ARCHS[:1]:
        arch = nb201.NB201Genotype(ops)
        net = TinyNetwork(C=4, N=N, genotype=arch, num_classes=10)
        mapped = extract_network_variables(model, variables, arch)
        reference = jax.eval_shape(net.init, jax.random.key(2), X)
        assert (jax.tree.map(lambda a: a.shape, mapped["params"])
                == jax.tree.map(lambda a: a.shape, reference["params"]))
        # the path's parameters are the network's: the space's closed-form count
        assert (sum(p.size for p in jax.tree.leaves(mapped["params"]))
                == nb201.count_params(arch, 4, N, 10))
        # float one-hot weights only: one compile of each mode serves every arch
        one_hot = jax.nn.one_hot(jnp.asarray(ops), 5)
        logits, stats = train(variables, one_hot)
        ref_logits, ref_stats = jax.jit(functools.partial(
            net.apply, train=True, mutable=["batch_stats"]))(mapped, X)
        np.testing.assert_allclose(logits, ref_logits, atol=2e-5)
        # the running statistics the path updates are the network's
        updated = extract_network_variables(model, {"batch_stats": stats["batch_stats"]},
                                            arch)["batch_stats"]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                     updated, ref_stats["batch_stats"])
        np.testing.assert_allclose(evaluate(variables, one_hot),
                                   jax.jit(net.apply)(mapped, X), atol=2e-5)


def test_an_int_path_is_its_one_hot_weights():
    path = jnp.asarray([1, 4, 0, 2, 3, 3], jnp.int32)
    np.testing.assert_array_equal(as_weights(path), np.eye(5)[np.asarray(path)])
    w = jax.nn.softmax(jax.random.normal(jax.random.key(3), (6, 5)))
    np.testing.assert_array_equal(as_weights(w), w)


@pytest.mark.slow
def test_the_scan_formulation_computes_the_unrolled_function():
    fused, v_fused, train_fused, _ = _supernet("fused", False, 2)
    scan = NB201Supernet(C=4, N=2, num_classes=10, mixed_op="scan")
    w = jax.nn.softmax(jax.random.normal(jax.random.key(3), (6, 5)))
    # the scan layout stacks a stage's cells: build it from the unrolled one
    params = dict(v_fused["params"])
    for s in range(3):
        cells = [params.pop(f"stage{s}_cell{n}") for n in range(2)]
        params[f"stage{s}"] = {"cell": jax.tree.map(lambda *a: jnp.stack(a), *cells)}
    stats = dict(v_fused["batch_stats"])
    for s in range(3):
        cells = [stats.pop(f"stage{s}_cell{n}") for n in range(2)]
        stats[f"stage{s}"] = {"cell": jax.tree.map(lambda *a: jnp.stack(a), *cells)}
    out_scan, _ = scan.apply({"params": params, "batch_stats": stats}, X, w, train=True,
                             mutable=["batch_stats"])
    np.testing.assert_allclose(out_scan, train_fused(v_fused, w)[0], atol=2e-5)


@pytest.mark.parametrize("mixed_op", [
    "loop", pytest.param("fused", marks=pytest.mark.slow)])
def test_a_cell_is_linear_in_the_weights_of_an_edge_into_its_output(mixed_op):
    """Edge (3 <- 2) feeds the cell output directly: f(w) = f(0) + sum_k w_k (f(e_k) -
    f(0)) for its row w, each f(e_k) the cell with that edge one op alone; `none`
    (k = 0) gives f(e_0) = f(0)."""
    cell = SearchCell(mixed_op=mixed_op)
    x = jax.random.normal(jax.random.key(4), (3, 6, 6, 4))
    base = jax.nn.softmax(jax.random.normal(jax.random.key(5), (6, 5)))
    variables = cell.init(jax.random.key(6), x, base, True)
    f = jax.jit(lambda w: cell.apply(variables, x, w, True, mutable=["batch_stats"])[0])
    e = nb201.EDGES.index((3, 2))
    rows = jnp.concatenate([jnp.zeros((1, 5)), jnp.eye(5),
                            jax.random.uniform(jax.random.key(7), (1, 5))])
    outs = [f(base.at[e].set(r)) for r in rows]
    zero, singles, mixed = outs[0], outs[1:6], outs[6]
    np.testing.assert_allclose(singles[0], zero, atol=1e-6)  # none adds nothing
    expected = zero + sum(rows[6, k] * (singles[k] - zero) for k in range(5))
    np.testing.assert_allclose(mixed, expected, atol=2e-5)
    # skip_connect alone on the edge adds node 2 itself; and no edge is a no-op
    assert float(jnp.abs(singles[1] - zero).max()) > 1e-3


def test_a_cell_of_none_edges_outputs_zeros():
    cell = SearchCell(mixed_op="loop")
    x = jax.random.normal(jax.random.key(8), (2, 4, 4, 4))
    w = jnp.zeros((6, 5)).at[:, 0].set(1.0)
    variables = cell.init(jax.random.key(9), x, w, True)
    out, _ = cell.apply(variables, x, w, True, mutable=["batch_stats"])
    assert out.shape == x.shape and float(jnp.abs(out).max()) == 0.0


def test_bad_arch_inputs_are_refused():
    model, variables, _, _ = _supernet("loop", False)
    with pytest.raises(ValueError, match=r"shape \(6, 5\)"):
        model.apply(variables, X, jnp.zeros((14, 8)), train=False)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        model.apply(variables, X, jnp.zeros((5,), jnp.int32), train=False)
    assert tuple(model.primitives) == nb201.OPS


def _model_config(**overrides) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"model": {
        "space": "nb201", "channels": 4, "layers": 1, "mixed_op": "loop",
        "affine": False, **overrides}})


def test_nb201_is_a_bilevel_space_by_config():
    config = _model_config()
    assert supernet_rules.check_model(config) == "nb201"
    model, space = supernets.build(config.model, 10)
    assert isinstance(model, NB201Supernet) and (model.C, model.N) == (4, 1)
    assert space.name == "nb201" and space.num_classes == 10
    for key, value in [("channels", 0), ("layers", -1), ("mixed_op", "gather"),
                       ("affine", 1)]:
        with pytest.raises(ConfigError, match=f"model.{key}"):
            supernet_rules.check_model(_model_config(**{key: value}))


SPOS_CONFIG = "experiments/nb201_spos_digits.py"


def _spos_config(**overrides) -> ml_collections.ConfigDict:
    from jaxnas import config as config_lib

    config = config_lib.load_config(SPOS_CONFIG)
    config_lib.apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
    return config


def test_spos_configs_take_the_nb201_model_rules():
    from jaxnas import search

    search.validate_config(_spos_config())
    for key, value, match in [("model.mixed_op", "gather", "model.mixed_op='gather'"),
                              ("model.layers", 0, "model.layers=0"),
                              ("evolution.max_params", 1000, "max_params=1000"),
                              ("model.space", "nope", "model.space='nope'")]:
        with pytest.raises(ConfigError, match=match):
            search.validate_config(_spos_config(**{key: value}))


@pytest.mark.slow
def test_spos_on_nb201_runs_end_to_end(tmp_path, digits_data_dir):
    from jaxnas import search

    config = _spos_config(**{"data.data_dir": digits_data_dir, "num_steps": 3,
                             "model.channels": 4, "oneshot.eval_paths": 0,
                             "evolution.population_size": 4, "evolution.num_cycles": 4,
                             "evolution.batch_size": 2, "evolution.sample_size": 2})
    results = search.run(config, str(tmp_path))
    arch = nb201.from_str(results["genotype_str"])
    assert list(arch.ops) == results["path"] and results["genotype"]["type"] == "nb201"
    assert results["params"] == nb201.count_params(arch, 4, 1, 10, in_channels=1)
    assert 0.0 <= results["fitness"] <= 1.0
    assert np.asarray(results["training_counts"]).sum() == 3 * 6  # 6 edges a step
