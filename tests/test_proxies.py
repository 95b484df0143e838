"""Zero-cost proxies against closed forms and hand loops; the supernet's vmapped
population scores against each path's discrete network."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import proxies
from jaxnas.errors import ConfigError
from jaxnas.networks import chain as net_lib
from jaxnas.spaces import chain as space_lib
from jaxnas.supernet import chain as sn


def _linear_net(params, x):
    """A bias-free linear chain x -> W1 -> W2 -> W3 (rows are examples)."""
    for w in params:
        x = x @ w
    return x


def test_synflow_of_a_linear_chain_is_depth_times_r():
    # R(|theta|) = 1^T |W1| |W2| |W3| 1 (times N rows) is homogeneous of degree 1 in
    # every layer, so sum theta dR/dtheta over one layer is R: synflow = depth * R.
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        ws = [rng.normal(size=s) for s in ((5, 4), (4, 3), (3, 2))]
        params = [jnp.asarray(w) for w in ws]
        x = np.zeros((2, 5))  # only its shape counts
        score = proxies.synflow(_linear_net, params, x)
        r = 2 * np.ones(5) @ np.abs(ws[0]) @ np.abs(ws[1]) @ np.abs(ws[2]) @ np.ones(2)
        assert score.dtype == jnp.float64
        np.testing.assert_allclose(float(score), 3 * r, rtol=1e-12)
        # by hand for one layer: sum_ij |W1_ij| * dR/dW1_ij
        left = 2 * np.ones(5)
        right = np.abs(ws[1]) @ np.abs(ws[2]) @ np.ones(2)
        np.testing.assert_allclose(np.sum(np.abs(ws[0]) * np.outer(left, right)), r)


def _regression(params, batch):
    x, y = batch
    return 0.5 * jnp.mean(jnp.square(x @ params["w"] + params["b"] - y))


def test_snip_and_grad_norm_of_least_squares_by_hand():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(7, 3)), rng.normal(size=7)
        w, b = rng.normal(size=3), 0.3
        resid = x @ w + b - y
        gw, gb = x.T @ resid / 7, resid.mean()
        params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
        np.testing.assert_allclose(
            float(proxies.snip(_regression, params, (x, y))),
            np.sum(np.abs(w * gw)) + abs(b * gb), rtol=1e-12)
        np.testing.assert_allclose(
            float(proxies.grad_norm(_regression, params, (x, y))),
            np.sqrt(np.sum(gw ** 2) + gb ** 2), rtol=1e-12)


def test_naswot_against_a_hamming_loop():
    rng = np.random.default_rng(2)
    w1, w2 = rng.normal(size=(4, 6)), rng.normal(size=(6, 5))
    x = rng.normal(size=(5, 4))

    def acts(p, x):
        h = x @ p[0]
        return [h, jnp.maximum(h, 0) @ p[1]]

    a1 = x @ w1
    a2 = np.maximum(a1, 0) @ w2
    codes = np.concatenate([a1 > 0, a2 > 0], axis=1)
    n_a = codes.shape[1]
    k = np.array([[n_a - np.sum(codes[i] != codes[j]) for j in range(5)]
                  for i in range(5)], np.float64)
    score = proxies.naswot(acts, (jnp.asarray(w1, jnp.float32),
                                  jnp.asarray(w2, jnp.float32)), jnp.asarray(x))
    np.testing.assert_allclose(float(score), np.linalg.slogdet(k)[1], rtol=1e-5)
    # a masked unit is left out: masking the second layer = only the first's codes
    masked = proxies.naswot_kernel([a1, (a2, np.zeros(5))])
    np.testing.assert_array_equal(np.asarray(masked),
                                  proxies.naswot_kernel([a1]))


def test_jacov_of_a_linear_map_is_closed_form():
    # f(x) = x W: every example's input gradient is W 1, so the correlation matrix is
    # all ones, with eigenvalues N and 0 (N - 1 times)
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        w = jnp.asarray(rng.normal(size=(6, 3)))
        x = jnp.asarray(rng.normal(size=(4, 6)))
        k = proxies.JACOV_K
        want = -(np.log(4 + k) + 1 / (4 + k)) - 3 * (np.log(k) + 1 / k)
        np.testing.assert_allclose(float(proxies.jacov(lambda p, x: x @ p, w, x)),
                                   want, rtol=1e-6)


def _tapped_convnet(params, batch, tap):
    """1x1 conv -> ReLU -> mean pool -> dense with bias -> mean cross-entropy; the
    conv and dense outputs pass through ``tap``."""
    x, labels = batch
    z1 = tap(jnp.einsum("nhwc,cd->nhwd", x, params["w1"]))
    z2 = tap(jnp.mean(jax.nn.relu(z1), axis=(1, 2)) @ params["w2"] + params["b2"])
    logp = jax.nn.log_softmax(z2)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def test_fisher_of_a_tiny_convnet_by_hand():
    # backpropagation written out in numpy: dL/dz2 = (softmax - onehot) / N,
    # dL/dz1 = (dL/dz2 W2^T / positions) * [z1 > 0]; g = sum over positions z * dL/dz
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        n, hw, c_in, c_mid, k = 3, 2, 2, 3, 4
        x = rng.normal(size=(n, hw, hw, c_in))
        labels = np.array([0, 3, 1])
        w1, w2, b2 = (rng.normal(size=(c_in, c_mid)), rng.normal(size=(c_mid, k)),
                      rng.normal(size=k))
        z1 = np.einsum("nhwc,cd->nhwd", x, w1)
        z2 = np.maximum(z1, 0).mean(axis=(1, 2)) @ w2 + b2
        p = np.exp(z2 - z2.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz2 = (p - np.eye(k)[labels]) / n
        dz1 = (dz2 @ w2.T)[:, None, None, :] / hw ** 2 * (z1 > 0)
        g1, g2 = (z1 * dz1).sum(axis=(1, 2)), z2 * dz2
        want = 0.5 * (np.square(g1).mean(0).sum() + np.square(g2).mean(0).sum())
        params = {"w1": jnp.asarray(w1), "w2": jnp.asarray(w2), "b2": jnp.asarray(b2)}
        got = proxies.fisher(_tapped_convnet, params, (jnp.asarray(x), labels))
        np.testing.assert_allclose(float(got), want, rtol=1e-10)
        # a population of three parameter sets in one vmapped, jitted call
        stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a, -a]), params)
        batch = jax.jit(lambda s: proxies.population(
            lambda q: proxies.fisher(_tapped_convnet, q, (jnp.asarray(x), labels)),
            s))(stacked)
        loop = [proxies.fisher(_tapped_convnet, jax.tree.map(lambda a: a[i], stacked),
                               (jnp.asarray(x), labels)) for i in range(3)]
        np.testing.assert_allclose(np.asarray(batch), np.asarray(loop), rtol=1e-10)
        assert float(batch[0]) != float(batch[1])


def test_population_is_the_loop_over_members():
    rng = np.random.default_rng(4)
    stacked = [jnp.asarray(rng.normal(size=(3,) + s), jnp.float32)
               for s in ((5, 4), (4, 2))]
    x = jnp.ones((1, 5))
    batch = proxies.population(lambda p: proxies.synflow(_linear_net, p, x), stacked)
    loop = [proxies.synflow(_linear_net, [s[i] for s in stacked], x) for i in range(3)]
    np.testing.assert_allclose(np.asarray(batch), np.asarray(loop), rtol=1e-6)


def test_bad_inputs_refused_before_compiling():
    def never(*_):
        raise AssertionError("compiled")

    with pytest.raises(ConfigError, match="unknown proxy 'zen'"):
        proxies.chain_fitness(["synflow", "zen"], None, {}, jnp.ones((4, 8, 8, 1)),
                              jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="naswot needs a batch of at least 2"):
        proxies.chain_fitness(["naswot"], None, {}, jnp.ones((1, 8, 8, 1)),
                              jnp.zeros(1, jnp.int32))
    with pytest.raises(ValueError, match="at least 2"):
        proxies.naswot(never, None, jnp.ones((1, 3)))


SPACE = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                             strides=(1, 2), head_channels=8, in_channels=1)


def _chain_case(names, paths, discrete_rows):
    model = sn.ChainSupernet(SPACE, 3)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    labels = jnp.array([0, 1, 2, 1])
    variables = model.init(sn.init_key(jax.random.key(1)), x, jnp.zeros(2, jnp.int32))
    paths = np.asarray(paths, np.int32)
    fitness = jax.jit(proxies.chain_fitness(names, model, variables, x, labels))
    scores = np.asarray(fitness(paths))
    assert scores.shape == (len(paths), len(names)) and np.all(np.isfinite(scores))
    for i in discrete_rows:
        net = net_lib.build_path_network(SPACE, paths[i], 3)
        v = sn.extract_path_variables(SPACE, variables, paths[i])
        want = jax.jit(lambda v: jnp.stack([proxies.chain_path_score(
            n, net, v, x, labels) for n in names]))(v)
        np.testing.assert_allclose(scores[i], np.asarray(want), rtol=2e-4, atol=1e-5,
                                   err_msg=str(paths[i]))
    # the proxies do tell the paths apart
    assert len({tuple(np.round(s, 3)) for s in scores}) == len(paths)


def test_chain_population_scores_equal_the_discrete_network():
    """One vmapped supernet call scores every path as its own discrete network does:
    NASWOT with the padded hidden channels of a small block (k3 e3, inside the
    padded 7x7 e6) masked out, fisher with its taps on the padded BatchNorm inputs.
    The slow test below checks every proxy."""
    _chain_case(("naswot", "fisher"), [[0, 5], [5, 0]], discrete_rows=[0])


@pytest.mark.slow
def test_chain_population_every_proxy_equals_each_discrete_network():
    _chain_case(proxies.PROXIES, [[0, 5], [3, 2], [5, 0]], discrete_rows=[0, 1, 2])
