"""ProxylessNAS: binary gates (one-hot value, the paper's gradient), the estimator against
brute force over every gate sample (exact for losses linear in each edge's gate; for a
quadratic in one gate the gap is the closed form below; float32, so tolerances are
float32 rounding), the sampling distribution, the expected-cost term and op parameter
table by hand, one strategy step, config refusals."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import hardware, methods, relax
from jaxnas.errors import ConfigError
from jaxnas.spaces.ops import PRIMITIVES
from jaxnas.strategies import proxyless as px
from test_darts_strategy import TRAIN, VAL, ToySupernet


def jac(p):
    """d p_j / d alpha_i = p_j (delta_ij - p_i) of p = softmax(alpha), [i, j]."""
    return np.diag(p) - np.outer(p, p)


def test_binary_gates_are_one_hot_in_value_with_the_papers_gradient():
    a = jnp.asarray([0.3, -1.0, 0.7, 0.1])
    c = jnp.asarray([1.0, -2.0, 0.5, 3.0])
    gates = jax.jit(relax.binary_gates)
    # L(g) = sum_j c_j g_j^2: dL/dg_j = 2 c_j g_j (nonzero only at the sample)
    grad_of = jax.jit(jax.grad(lambda a, i: jnp.sum(c * relax.binary_gates(a, i) ** 2)))
    for idx in range(4):
        g = gates(a, jnp.asarray(idx))
        np.testing.assert_array_equal(np.asarray(g), np.eye(4)[idx])
        grad = grad_of(a, jnp.asarray(idx))
        p = np.asarray(jax.nn.softmax(a))
        dldg = 2 * np.asarray(c) * np.eye(4)[idx]
        want = [sum(dldg[j] * p[j] * ((i == j) - p[i]) for j in range(4)) for i in range(4)]
        np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def _estimator_and_exact(loss, alphas):
    """E_g[estimator] and grad E_g[L(g)], both by enumerating every gate sample of every
    row (rows independent, each Categorical(softmax(alphas[row])))."""
    rows, k = alphas.shape
    p = np.asarray(jax.nn.softmax(alphas, axis=-1))
    est = np.zeros_like(p)
    exact = np.zeros_like(p)
    grad = jax.jit(lambda a, idx: jax.grad(lambda a: loss(relax.binary_gates(a, idx)))(a))
    value_of = jax.jit(loss)
    for idx in itertools.product(range(k), repeat=rows):
        prob = np.prod([p[r, i] for r, i in enumerate(idx)])
        est += prob * np.asarray(grad(alphas, jnp.asarray(idx)))
        value = float(value_of(jnp.asarray(np.eye(k, dtype=np.float32)[list(idx)])))
        # d prob / d alpha[r] = prob * (e_idx[r] - p[r]) (score function, closed form)
        for r, i in enumerate(idx):
            exact[r] += value * prob * (np.eye(k)[i] - p[r])
    return est, exact


def test_estimator_is_unbiased_for_losses_linear_in_each_edges_gate():
    rng = np.random.default_rng(0)
    alphas = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    # bilinear across the two edges plus linear terms: linear in each edge's gate
    loss = lambda g: g[0] @ b @ g[1] + jnp.sum(c * g) + 0.7  # noqa: E731
    est, exact = _estimator_and_exact(loss, alphas)
    np.testing.assert_allclose(est, exact, rtol=1e-4, atol=1e-6)
    assert np.abs(exact).max() > 1e-2


def test_estimator_bias_for_a_quadratic_gate_loss_is_the_closed_form():
    # L(g) = 1/2 g^T A g + c.g on one edge: on one-hot gates L(e_j) = A_jj / 2 + c_j, so
    # grad E[L] = J^T (diag(A)/2 + c); the estimator's mean is E_k[J^T (A e_k + c)] =
    # J^T (A p + c). Gap = J^T (A p - diag(A) / 2), J = diag(p) - p p^T.
    rng = np.random.default_rng(1)
    alphas = jnp.asarray(rng.normal(size=(1, 4)), jnp.float32)
    a = rng.normal(size=(4, 4)).astype(np.float32)
    a = a + a.T
    c = rng.normal(size=4).astype(np.float32)
    loss = lambda g: 0.5 * g[0] @ jnp.asarray(a) @ g[0] + g[0] @ jnp.asarray(c)  # noqa
    est, exact = _estimator_and_exact(loss, alphas)
    p = np.asarray(jax.nn.softmax(alphas[0]))
    np.testing.assert_allclose(exact[0], jac(p) @ (np.diag(a) / 2 + c), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(est[0] - exact[0], jac(p) @ (a @ p - np.diag(a) / 2),
                               rtol=1e-4, atol=1e-6)
    assert np.abs(est - exact).max() > 1e-2  # only approximate here


def test_relaxation_samples_follow_softmax_and_evaluates_by_softmax():
    alphas = {"normal": jnp.asarray([[1.0, 0.0, -1.0]]), "reduce": jnp.zeros((1, 3))}
    r = relax.binary_gate_relaxation()
    draw = jax.jit(jax.vmap(lambda k: r.weights(k, alphas, 0)["normal"][0]))
    g = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))
    assert set(np.unique(g)) == {0.0, 1.0} and np.all(g.sum(-1) == 1)
    p = np.asarray(jax.nn.softmax(alphas["normal"][0]))
    np.testing.assert_allclose(g.mean(0), p, atol=4 * np.sqrt(p * (1 - p) / 4000).max())
    np.testing.assert_allclose(r.expected(alphas)["normal"], jax.nn.softmax(
        alphas["normal"]), rtol=1e-6)


def test_op_parameter_table_by_hand_and_the_expected_cost_penalty():
    c = 4
    t = px.op_param_table(PRIMITIVES, c, steps=2)
    col = {p: i for i, p in enumerate(PRIMITIVES)}
    bn = 2 * c  # affine BatchNorm scale and bias
    normal = t["normal"][0]
    for name in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"):
        assert normal[col[name]] == 0
    assert normal[col["sep_conv_3x3"]] == 2 * (9 * c + c * c + bn)
    assert normal[col["sep_conv_5x5"]] == 2 * (25 * c + c * c + bn)
    assert normal[col["dil_conv_3x3"]] == 9 * c + c * c + bn
    assert normal[col["dil_conv_5x5"]] == 25 * c + c * c + bn
    # reduction cell at 2C; the input edges' skip is a FactorizedReduce (two C x C 1x1)
    c2 = 2 * c
    assert t["reduce"][0, col["skip_connect"]] == 2 * c2 * (c2 // 2) + 2 * c2
    assert t["reduce"][4, col["skip_connect"]] == 0  # node 0 -> node 1: stride 1
    assert t["normal"].shape == (5, 8)
    alphas = {"normal": jnp.asarray(np.random.default_rng(0).normal(size=(5, 8))),
              "reduce": jnp.zeros((5, 8))}
    pen = hardware.with_expected_cost(relax.binary_gate_relaxation(), t, 0.5).penalty(
        alphas, 0)
    p = np.asarray(jax.nn.softmax(alphas["normal"], -1))
    want = 0.5 * ((p * t["normal"]).sum() + (t["reduce"] / 8).sum())
    np.testing.assert_allclose(float(pen), want, rtol=1e-5)


def test_a_step_trains_the_sampled_path_and_the_cost_lowers_costly_alphas():
    # SGD rate 1 on the alphas: the update is minus the gradient. With a huge cost weight
    # the penalty dominates: every op's alpha moves against its cost relative to the
    # edge's expected cost.
    table = px.op_param_table(PRIMITIVES, 16, 4)
    strat = px.proxyless(ToySupernet(), w_schedule=0.05, a_tx=optax.sgd(1.0),
                         cost_weight=1e4, cost_table={k: v / 1e6 for k, v in table.items()})
    state = strat.init(jax.random.key(0), TRAIN["image"])
    new, metrics = jax.jit(strat.step)(state, TRAIN, VAL)
    assert np.isfinite(float(metrics["train_loss"]))
    table = table["normal"] / 1e6
    p = np.asarray(jax.nn.softmax(state.alphas["normal"], -1))
    moved = np.asarray(new.alphas["normal"] - state.alphas["normal"])
    expensive = table > (p * table).sum(-1, keepdims=True)
    assert np.all(moved[expensive] < 0) and np.all(moved[~expensive] > 0)
    with pytest.raises(ValueError, match="cost_weight"):
        px.proxyless(ToySupernet(), cost_weight=-1.0)


def test_config_rules():
    from experiments import proxyless_digits
    config = proxyless_digits.get_config()
    assert methods.validate(config).name == "proxyless"
    config.proxyless.cost_weight = -0.1
    with pytest.raises(ConfigError, match=r"proxyless.cost_weight=-0.1"):
        methods.validate(config)
    config = proxyless_digits.get_config()
    config.proxyless.cost = "latency"
    with pytest.raises(ConfigError, match=r"proxyless.cost='latency'.*'params'"):
        methods.validate(config)
    from experiments import nb201_darts_digits
    config = nb201_darts_digits.get_config()
    config.method = "proxyless"
    config.proxyless = proxyless_digits.get_config().proxyless
    with pytest.raises(ConfigError, match=r"cost='params' .*model.space='nb201'"):
        methods.validate(config)
    config.proxyless.cost = "none"
    methods.validate(config)
