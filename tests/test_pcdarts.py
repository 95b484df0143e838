"""PC-DARTS: the partial-channel mixed op (bypassed channels unchanged at the authors'
shuffled positions, the shuffle = PC-DARTS' view/transpose), edge normalisation (node
softmax folded into the op weights, the whole edge output scaled by beta), derivation by
alpha * beta, K=1 = DARTS, one strategy step on a tiny supernet, config refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import methods, relax
from jaxnas.errors import ConfigError
from jaxnas.spaces.darts import DartsSpace
from jaxnas.spaces.ops import PRIMITIVES
from jaxnas.strategies import pcdarts as pc
from jaxnas.supernet.darts import DartsSupernet, LoopMixedOp, channel_shuffle
from test_darts_strategy import TRAIN, VAL, ToySupernet


def torch_channel_shuffle(x_nhwc, groups):
    """PC-DARTS' channel_shuffle written on an NCHW array as the authors do (view
    (b, groups, C/groups, h, w), transpose(1, 2), flatten), in numpy."""
    x = np.transpose(x_nhwc, (0, 3, 1, 2))
    b, c, h, w = x.shape
    x = x.reshape(b, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(b, c, h, w)
    return np.transpose(x, (0, 2, 3, 1))


def test_channel_shuffle_is_the_authors_view_transpose_permutation():
    x = np.arange(2 * 3 * 3 * 12, dtype=np.float32).reshape(2, 3, 3, 12)
    for groups in (1, 2, 3, 4):
        np.testing.assert_array_equal(np.asarray(channel_shuffle(jnp.asarray(x), groups)),
                                      torch_channel_shuffle(x, groups))
    # K=4 on 8 channels: channel 1 (second of the op's part) moves to position 4
    np.testing.assert_array_equal(np.asarray(channel_shuffle(jnp.arange(8.0), 4)),
                                  [0, 2, 4, 6, 1, 3, 5, 7])


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_edge_bypasses_unchanged_at_the_shuffled_positions(stride):
    c, k = 8, 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, c))
    # weights not summing to 1: the bypass is scaled by their sum (the folded beta)
    w = jax.random.uniform(jax.random.key(1), (len(PRIMITIVES),), minval=0.1, maxval=0.5)
    op = LoopMixedOp(c, stride, tuple(PRIMITIVES), partial_channels=k)
    variables = op.init(jax.random.key(2), x, w, True)
    out = np.asarray(op.apply(variables, x, w, True, mutable=["batch_stats"])[0])
    # the same ops on the first C/K channels alone: a plain (K=1) mixed op of C/K channels
    # takes exactly these parameters
    part = LoopMixedOp(c // k, stride, tuple(PRIMITIVES))
    y = np.asarray(part.apply(variables, x[..., :c // k], w, True,
                              mutable=["batch_stats"])[0])
    rest = np.asarray(x[..., c // k:])
    if stride == 2:  # nn.MaxPool2d(2, 2) by hand
        rest = np.max(rest.reshape(2, 2, 2, 2, 2, c - c // k), axis=(2, 4))
    expected = torch_channel_shuffle(np.concatenate([y, float(np.sum(w)) * rest], -1), k)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # the bypassed channels are at the positions the shuffle sends channels C/K.. to
    perm = np.asarray(channel_shuffle(jnp.arange(c), k))
    bypass = [i for i in range(c) if perm[i] >= c // k]
    np.testing.assert_allclose(out[..., bypass],
                               float(np.sum(w)) * rest[..., perm[bypass] - c // k],
                               rtol=1e-6)
    # edge normalisation: op weights beta * w scale the *whole* edge output, bypass
    # included, as PC-DARTS' weights2[e] * MixedOp(x)
    scaled = np.asarray(op.apply(variables, x, 0.3 * w, True, mutable=["batch_stats"])[0])
    np.testing.assert_allclose(scaled, 0.3 * out, rtol=1e-5, atol=1e-6)


def test_edge_normalized_weights_are_softmax_alpha_times_node_softmax_beta():
    steps = 3
    groups = pc.node_groups(steps)
    assert groups == (2, 3, 4)
    rng = np.random.default_rng(0)
    a = {"normal": rng.normal(size=(9, 8)), "reduce": rng.normal(size=(9, 8)),
         "normal_edges": rng.normal(size=9), "reduce_edges": rng.normal(size=9)}
    rel = relax.edge_normalized_relaxation(relax.softmax_relaxation(), groups)
    got = rel.expected(jax.tree.map(jnp.asarray, a))
    assert set(got) == {"normal", "reduce"}
    for cell in ("normal", "reduce"):
        sm = np.exp(a[cell]) / np.exp(a[cell]).sum(-1, keepdims=True)
        beta = np.concatenate([np.exp(b) / np.exp(b).sum() for b in
                               np.split(a[cell + "_edges"], [2, 5])])
        np.testing.assert_allclose(got[cell], sm * beta[:, None], rtol=1e-5)
        # each node's edge weights sum to 1 (a softmax over its inputs)
        np.testing.assert_allclose([got[cell][s:e].sum() for s, e in ((0, 2), (2, 5),
                                                                       (5, 9))], 1.0,
                                   rtol=1e-5)
    np.testing.assert_allclose(rel.weights(None, a, 0)["normal"], got["normal"])


def test_derivation_selects_by_alpha_times_beta_where_alpha_alone_disagrees():
    space = pc.EdgeNormalizedSpace(DartsSpace(steps=2))
    rel = relax.edge_normalized_relaxation(relax.softmax_relaxation(), pc.node_groups(2))
    conv = PRIMITIVES.index("sep_conv_3x3")
    alphas = {c: jnp.zeros((5, 8)) for c in ("normal", "reduce")}
    alphas.update({c + "_edges": jnp.zeros(5) for c in ("normal", "reduce")})
    # node 1 (edges 2, 3, 4 from states 0, 1, 2): alpha favours edges 0 and 1 of it ...
    alphas["normal"] = alphas["normal"].at[2, conv].set(3.0).at[3, conv].set(2.0) \
        .at[4, conv].set(1.0)
    # ... but beta weights state 0's edge down: alpha * beta keeps states 1 and 2
    alphas["normal_edges"] = alphas["normal_edges"].at[2].set(-3.0)
    alpha_only = DartsSpace(steps=2).derive(relax.softmax(
        {"normal": alphas["normal"], "reduce": alphas["reduce"]}))
    both = space.derive(rel.expected(alphas))
    assert sorted(i for _, i in alpha_only.normal[2:]) == [0, 1]
    assert sorted(i for _, i in both.normal[2:]) == [1, 2]
    assert [op for op, _ in both.normal[2:]] == ["sep_conv_3x3"] * 2
    # the space's initial architecture carries one beta per edge and cell, 1e-3 N(0, 1)
    init = space.init_arch(jax.random.key(0))
    assert {k: v.shape for k, v in init.items()} == {
        "normal": (5, 8), "reduce": (5, 8), "normal_edges": (5,), "reduce_edges": (5,)}
    assert 0 < float(jnp.abs(init["normal_edges"]).max()) < 1e-2


def test_k1_is_the_darts_mixed_op():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (len(PRIMITIVES),)))
    plain = LoopMixedOp(4, 1, tuple(PRIMITIVES))
    k1 = LoopMixedOp(4, 1, tuple(PRIMITIVES), partial_channels=1)
    v = plain.init(jax.random.key(2), x, w, True)
    assert jax.tree.structure(k1.init(jax.random.key(2), x, w, True)) == \
        jax.tree.structure(v)
    np.testing.assert_array_equal(
        np.asarray(k1.apply(v, x, w, True, mutable=["batch_stats"])[0]),
        np.asarray(plain.apply(v, x, w, True, mutable=["batch_stats"])[0]))


def test_a_step_moves_alphas_and_betas_and_each_nodes_beta_gradient_sums_to_zero():
    # SGD with rate 1 on the architecture: the update is minus the hypergradient. A
    # softmax over a node's inputs is unchanged by adding one constant to their betas,
    # so the gradient of those betas sums to 0 per node (not over other groupings).
    strat = pc.pcdarts(ToySupernet(), w_schedule=0.05, a_tx=optax.sgd(1.0))
    state = strat.init(jax.random.key(0), TRAIN["image"])
    new, metrics = jax.jit(strat.step)(state, TRAIN, VAL)
    assert np.isfinite(float(metrics["train_loss"]))
    for cell in ("normal", "reduce"):
        g = np.asarray(state.alphas[cell + "_edges"] - new.alphas[cell + "_edges"])
        assert np.abs(g).max() > 1e-6
        sums = [g[s:s + n].sum() for s, n in zip(np.cumsum((0, 2, 3, 4)), (2, 3, 4, 5))]
        np.testing.assert_allclose(sums, 0.0, atol=1e-6 * np.abs(g).max() + 1e-9)
        assert not np.allclose(new.alphas[cell], state.alphas[cell])


@pytest.mark.slow
def test_a_pcdarts_iteration_on_the_real_supernet_with_k4():
    model = DartsSupernet(channels=4, num_classes=3, layers=3, steps=1, multiplier=1,
                          stem_multiplier=1, mixed_op="loop", partial_channels=4)
    strat = pc.pcdarts(model, w_schedule=0.05)
    rng = np.random.default_rng(0)

    def batch():
        return {"image": jnp.asarray(rng.normal(size=(4, 4, 4, 3)), jnp.float32),
                "label": jnp.asarray(rng.integers(0, 3, 4), jnp.int32)}

    state = strat.init(jax.random.key(0), jnp.zeros((4, 4, 4, 3)))
    new, metrics = jax.jit(strat.step)(state, batch(), batch())
    assert np.isfinite(float(metrics["train_loss"]))
    for k in ("normal", "reduce", "normal_edges", "reduce_edges"):
        assert not np.allclose(new.alphas[k], state.alphas[k]), k
    assert strat.derive(new).normal[0][1] in (0, 1)


def _config(**model):
    from experiments import pcdarts_digits
    config = pcdarts_digits.get_config()
    for k, v in model.items():
        config.model[k] = v
    return config


def test_config_refuses_k_not_dividing_channels_and_non_loop_mixed_ops():
    assert methods.validate(_config()).name == "pcdarts"
    with pytest.raises(ConfigError, match=r"partial_channels=3 .*divisor of "
                                          r"model.channels=8"):
        c = _config()
        c.pcdarts.partial_channels = 3
        methods.validate(c)
    with pytest.raises(ConfigError, match=r"mixed_op='fused' .*expected 'loop'"):
        methods.validate(_config(mixed_op="fused"))
    with pytest.raises(ConfigError, match=r"pcdarts.partial_channels=0"):
        c = _config()
        c.pcdarts.partial_channels = 0
        methods.validate(c)
    # K = 1 (edge normalisation only) runs on any formulation
    c = _config(mixed_op="fused")
    c.pcdarts.partial_channels = 1
    methods.validate(c)
    with pytest.raises(ValueError, match="needs mixed_op='loop'"):
        DartsSupernet(channels=4, mixed_op="fused", partial_channels=4).init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
            {"normal": jnp.zeros((14, 8)), "reduce": jnp.zeros((14, 8))})
