"""Chain space and supernet: exact counts, padded blocks == discrete ones, gradients."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.networks import chain as net_lib
from jaxnas.networks import param_count
from jaxnas.spaces import chain as space_lib
from jaxnas.supernet import chain as sn
from jaxnas.supernet import chain_kernels as ck

SPACE = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(2, 1),
                             strides=(1, 2), head_channels=8, in_channels=1)
CLASSES = 3
X = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
PATHS = [(0, 5, 3), (4, 1, 2)]


@pytest.fixture(scope="module")
def supernet():
    model = sn.ChainSupernet(SPACE, CLASSES)
    variables = jax.jit(model.init)(sn.init_key(jax.random.key(1)), X,
                                    jnp.zeros(3, jnp.int32))
    # non-trivial BatchNorm parameters and statistics, so that mixing up choices shows
    # (zero-initialised residual BN scales too); padded weights stay zero
    leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    noisy = []
    for (where, a), k in zip(leaves, keys):
        weight = jax.tree_util.keystr(where).endswith(("'expand']", "'dw']",
                                                       "'project']"))
        keep = (a != 0) if weight else 1.0
        noisy.append(a + 0.1 * jnp.abs(jax.random.normal(k, a.shape)) * keep)
    return model, jax.tree.unflatten(tree, noisy)


def test_space_layers_and_defaults():
    assert [tuple(l) for l in SPACE.layers()] == [(4, 4, 1), (4, 4, 1), (4, 6, 2)]
    assert [l.residual for l in SPACE.layers()] == [True, True, False]
    assert SPACE.num_choices == (6, 6, 6)
    assert space_lib.CHOICE_NAMES == ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6",
                                      "mb_k7_e3", "mb_k7_e6")
    cifar, digits = space_lib.cifar_space(), space_lib.digits_space()
    assert cifar.num_layers == 16 and cifar.output_size(32) == 4
    assert digits.num_layers == 6 and digits.output_size(8) == 2
    with pytest.raises(ValueError, match="strides"):
        space_lib.ChainSpace(4, (4,), (1,), (3,), 8)
    with pytest.raises(ValueError, match="choice indices"):
        space_lib.count_params(SPACE, (0, 6, 0), CLASSES)


def test_parameter_count_of_a_path_by_hand():
    # stem 3*3*1*4 + BN 2*4 = 44
    # layer0 k3 e3 (h = 12): 4*12 + 2*12 + 9*12 + 2*12 + 12*4 + 2*4 = 260
    # layer1 k7 e6 (h = 24): 4*24 + 2*24 + 49*24 + 2*24 + 24*4 + 2*4 = 1472
    # layer2 k5 e6 (h = 24): 4*24 + 2*24 + 25*24 + 2*24 + 24*6 + 2*6 = 948
    # head 6*8 + 2*8 = 64; classifier 8*3 + 3 = 27
    assert space_lib.count_params(SPACE, (0, 5, 3), CLASSES) == 2815
    fixed, table = space_lib.param_table(SPACE, CLASSES)
    assert fixed == 44 + 64 + 27
    assert table[0, 0] == 260 and table[1, 5] == 1472 and table[2, 3] == 948


@pytest.mark.parametrize("path", PATHS)
def test_parameter_count_equals_the_discrete_network(path):
    net = net_lib.build_path_network(SPACE, path, CLASSES)
    shapes = jax.eval_shape(net.init, jax.random.key(0), X)
    assert param_count(shapes["params"]) == space_lib.count_params(
        SPACE, path, CLASSES)


def test_depthwise_implementations_agree():
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 5))  # odd size, stride 2 edges
    for k in (3, 7):
        w = jax.random.normal(jax.random.key(k), (k * k, 5))
        for stride in (1, 2):
            ref = ck.depthwise(x, w, k, stride, "lax")
            for impl in ("slices", "taps", "toeplitz"):
                np.testing.assert_allclose(ck.depthwise(x, w, k, stride, impl), ref,
                                           rtol=1e-5, atol=1e-5)
            # the hand-written VJP of "slices" against autodiff of the grouped conv
            ct = jnp.cos(ref)
            ga = jax.grad(lambda x, w: jnp.sum(ck.depthwise(x, w, k, stride, "slices") * ct),
                          (0, 1))(x, w)
            gb = jax.grad(lambda x, w: jnp.sum(ck.depthwise(x, w, k, stride, "lax") * ct),
                          (0, 1))(x, w)
            for a, b in zip(ga, gb):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_padded_supernet_equals_switch_and_the_discrete_network(supernet):
    """Gather (padded, masked) == lax.switch (true sizes) == the discrete block net,
    in training (batch statistics, updated running statistics) and eval mode."""
    model, variables = supernet
    switch = model.clone(dispatch="switch")

    @jax.jit
    def supernets(p):
        return (model.apply(variables, X, p, mutable=["batch_stats"]),
                switch.apply(variables, X, p, mutable=["batch_stats"]),
                model.apply(variables, X, p, train=False))

    for path in PATHS:
        p = jnp.asarray(path, jnp.int32)
        (a, ua), (b, ub), ea = supernets(p)
        net = net_lib.build_path_network(SPACE, path, CLASSES)
        dv = sn.extract_path_variables(SPACE, variables, path)
        (c, uc), ec = jax.jit(lambda v: (net.apply(v, X, mutable=["batch_stats"]),
                                         net.apply(v, X, train=False)))(dv)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b, c, rtol=1e-5, atol=1e-5)
        for upd in (ua, ub):
            got = sn.extract_path_variables(SPACE, dict(upd), path)["batch_stats"]
            jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5,
                                                                 atol=1e-6),
                         got, uc["batch_stats"])
            # statistics of unchosen choices are untouched
            for l, choice in enumerate(path):
                for name, new in upd["batch_stats"][f"layer{l}"].items():
                    old = variables["batch_stats"][f"layer{l}"][name]
                    others = np.arange(6) != choice
                    np.testing.assert_array_equal(new[others], old[others])
        np.testing.assert_allclose(ea, ec, rtol=1e-5, atol=1e-5)


def test_gradient_reaches_only_the_chosen_blocks(supernet):
    model, variables = supernet
    path = PATHS[0]
    labels = jnp.array([0, 1, 2, 1])

    def loss(params):
        logits, _ = model.apply({"params": params,
                                 "batch_stats": variables["batch_stats"]}, X,
                                jnp.asarray(path), mutable=["batch_stats"])
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for l, (spec, choice) in enumerate(zip(SPACE.layers(), path)):
        g = grads[f"layer{l}"]
        hidden_mask, tap_mask = sn.masks(spec)
        for name, value in g.items():
            value = np.asarray(value)
            unchosen = np.delete(value, choice, axis=0)
            assert not np.any(unchosen), (l, name)
            chosen = value[choice]
            assert np.any(chosen), (l, name)
        # inside the chosen block, the padding gets no gradient either
        h = hidden_mask[choice].astype(bool)
        assert not np.any(np.asarray(g["expand"][choice])[:, ~h])
        assert not np.any(np.asarray(g["project"][choice])[~h])
        dw = np.asarray(g["dw"][choice])
        assert not np.any(dw[~tap_mask[choice].astype(bool)])
        assert not np.any(dw[:, ~h])
    assert all(np.any(np.asarray(v)) for v in jax.tree.leaves(grads["stem"]))
    assert all(np.any(np.asarray(v)) for v in jax.tree.leaves(grads["head"]))


def test_one_compilation_serves_every_path_and_vmap_equals_a_loop(supernet):
    model, variables = supernet

    @jax.jit
    @chex.assert_max_traces(n=1)
    def logits(path):
        return model.apply(variables, X, path, train=False)

    rng = np.random.default_rng(0)
    paths = rng.integers(0, 6, (4, 3)).astype(np.int32)
    singles = [logits(jnp.asarray(p)) for p in paths]
    many = jax.jit(lambda ps: sn.apply_paths(model, variables, X, ps))(paths)
    for i, single in enumerate(singles):
        np.testing.assert_allclose(many[i], single, rtol=1e-5, atol=1e-6)
    # a one-hot path is reduced to the same indices before anything else runs
    np.testing.assert_array_equal(ck.as_indices(jax.nn.one_hot(paths, 6)[0]),
                                  paths[0])


def test_merge_path_stats_takes_each_choice_from_the_path_that_ran_it():
    old = {"layer0": {"m": jnp.zeros((6, 2))}, "stem": {"m": jnp.zeros(2)}}
    paths = jnp.array([[2], [0], [1], [5], [4], [3]])
    per_path = {"layer0": {"m": jnp.stack([jnp.full((6, 2), float(i))
                                           for i in range(6)])},
                "stem": {"m": jnp.arange(12.0).reshape(6, 2)}}
    merged = sn.merge_path_stats(old, per_path, paths)
    # choice c ran on path i with paths[i] == c, whose statistics are all i
    expected = np.argsort(np.asarray(paths[:, 0]))
    np.testing.assert_array_equal(merged["layer0"]["m"][:, 0], expected)
    np.testing.assert_array_equal(merged["stem"]["m"], [5.0, 6.0])
    partial = sn.merge_path_stats(old, jax.tree.map(lambda a: a[:2], per_path),
                                  paths[:2])
    np.testing.assert_array_equal(partial["layer0"]["m"][:, 0], [1, 0, 0, 0, 0, 0])


def test_genotype_json_round_trip():
    obj = space_lib.genotype_to_json(SPACE, (0, 5, 3), CLASSES)
    assert obj["params"] == 2815 and obj["names"][1] == "mb_k7_e6"
    space, path, classes = space_lib.genotype_from_json({"genotype": obj})
    assert space == SPACE and path == (0, 5, 3) and classes == CLASSES
