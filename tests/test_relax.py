"""jaxnas.relax against independent truths: closed forms, Monte Carlo, finite
differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import relax

LOGITS = jnp.array([[0.3, -1.2, 2.0, 0.0, 0.7], [1.0, 1.0, -0.5, 0.2, -2.0]], jnp.float32)


def test_softmax_and_sigmoid_over_the_last_axis_of_every_leaf():
    tree = {"normal": LOGITS, "reduce": -LOGITS}
    got = relax.softmax(tree)
    for k, a in tree.items():
        e = np.exp(np.asarray(a, np.float64))
        np.testing.assert_allclose(got[k], e / e.sum(-1, keepdims=True), rtol=1e-6)
        np.testing.assert_allclose(relax.sigmoid(tree)[k], 1 / (1 + np.exp(-np.asarray(a))),
                                   rtol=1e-6)


def test_sigmoid_jacobian_is_diagonal():
    """FairDARTS' point: an op's weight depends on its own alpha only (no competition)."""
    a = LOGITS[0]
    jac = np.asarray(jax.jacobian(relax.sigmoid)(a))
    s = 1 / (1 + np.exp(-np.asarray(a, np.float64)))
    np.testing.assert_allclose(jac, np.diag(s * (1 - s)), rtol=1e-5, atol=0)


def test_soft_gumbel_sample_is_the_softmax_of_the_perturbed_logits():
    key = jax.random.key(0)
    got = relax.gumbel_softmax(key, LOGITS, tau=0.5)
    g = np.asarray(jax.random.gumbel(key, LOGITS.shape), np.float64)
    z = (np.asarray(LOGITS, np.float64) + g) / 0.5
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_hard_gumbel_is_the_one_hot_of_the_soft_argmax_with_the_soft_gradient():
    key = jax.random.key(3)
    soft = relax.gumbel_softmax(key, LOGITS, tau=0.7)
    hard = relax.gumbel_softmax(key, LOGITS, tau=0.7, hard=True)
    want = np.eye(LOGITS.shape[-1])[np.argmax(np.asarray(soft), -1)]
    np.testing.assert_array_equal(np.asarray(hard), want)  # exactly 0 and 1, to the bit
    # straight-through: the gradient of any function of the sample equals the soft one's
    c = jnp.asarray(np.random.default_rng(0).normal(size=LOGITS.shape), jnp.float32)

    def objective(logits, hard_):
        return jnp.sum(c * relax.gumbel_softmax(key, logits, tau=0.7, hard=hard_))

    np.testing.assert_allclose(jax.grad(objective)(LOGITS, True),
                               jax.grad(objective)(LOGITS, False), rtol=1e-6, atol=1e-8)
    assert float(jnp.abs(jax.grad(objective)(LOGITS, True)).max()) > 0


def test_gumbel_max_frequencies_match_softmax_as_tau_goes_to_zero():
    """argmax(logits + Gumbel) ~ Categorical(softmax(logits)) (the Gumbel-max trick): the
    sample frequencies at a small temperature match softmax(logits) by Monte Carlo."""
    logits = jnp.array([0.5, -0.3, 1.2, 0.0], jnp.float32)
    n = 40000
    keys = jax.random.split(jax.random.key(7), n)
    samples = jax.jit(jax.vmap(lambda k: relax.gumbel_softmax(k, logits, tau=0.05)))(keys)
    freq = np.asarray(samples).mean(0)
    p = np.asarray(jax.nn.softmax(logits), np.float64)
    # a soft sample at tau = 0.05 is all but one-hot; each frequency within 5 sd
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n)), (freq, p)
    np.testing.assert_allclose(np.asarray(samples).sum(-1), 1.0, rtol=1e-5)


def test_pytrees_draw_independent_noise_per_leaf():
    tree = {"normal": LOGITS, "reduce": LOGITS}
    out = relax.gumbel_softmax(jax.random.key(1), tree, tau=1.0)
    assert not np.allclose(out["normal"], out["reduce"])
    d = relax.dirichlet(jax.random.key(1), tree)
    assert not np.allclose(d["normal"], d["reduce"])


def test_dirichlet_sample_lies_on_the_simplex_and_its_mean_is_conc_over_sum():
    alphas = jnp.array([0.4, -0.8, 1.5, 0.0], jnp.float32)
    conc = np.where(np.asarray(alphas) > 0, np.asarray(alphas),
                    np.expm1(np.asarray(alphas))) + 1  # elu + 1, written out
    np.testing.assert_allclose(relax.concentration(alphas), conc, rtol=1e-6)
    n = 40000
    keys = jax.random.split(jax.random.key(11), n)
    samples = np.asarray(jax.jit(jax.vmap(lambda k: relax.dirichlet(k, alphas)))(keys),
                         np.float64)
    assert samples.min() >= 0
    np.testing.assert_allclose(samples.sum(-1), 1.0, rtol=1e-5)
    mean = conc / conc.sum()
    var = mean * (1 - mean) / (conc.sum() + 1)  # Dirichlet marginal variance
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * np.sqrt(var / n)), (samples.mean(0),
                                                                           mean)
    np.testing.assert_allclose(relax.dirichlet_mean(alphas), mean, rtol=1e-6)


def test_dirichlet_pathwise_gradient_matches_a_finite_difference_of_the_expectation():
    """d/da E[f(x)], x ~ Dir(elu(a)+1): the mean of jax's pathwise gradients over many draws
    against a central difference of a Monte-Carlo expectation with common random numbers,
    and against the closed form, in float64.

    The common random numbers are uniforms pushed through the inverse Gamma CDF (scipy), so
    that each sample is a smooth function of the concentration: jax's own Gamma sampler
    rejects, and a finite difference through a rejection step jumps where the acceptance
    flips. Tolerances: 5 standard errors of the two estimates."""
    import scipy.special

    n = 20000
    c = np.array([1.0, -2.0, 3.0])
    with jax.enable_x64(True):
        alphas = jnp.array([0.3, -0.5, 1.0], jnp.float64)
        keys = jax.random.split(jax.random.key(5), n)
        per_draw = jax.vmap(jax.grad(lambda a, k: jnp.sum(c * relax.dirichlet(k, a) ** 2)),
                            (None, 0))
        pathwise = np.asarray(jax.jit(per_draw)(alphas, keys))

        def exact(a):  # E[x_i^2] = k_i (k_i + 1) / (K (K + 1)), K = sum k
            k = relax.concentration(a)
            return jnp.sum(c * k * (k + 1) / (jnp.sum(k) * (jnp.sum(k) + 1)))

        want = np.asarray(jax.grad(exact)(alphas))

    u = np.random.default_rng(0).uniform(size=(n, 3))

    def f_per_draw(a):
        k = np.where(a > 0, a, np.expm1(a)) + 1  # elu + 1, written out
        g = scipy.special.gammaincinv(k, u)      # Gamma(k_i) draws, smooth in k
        return (c * (g / g.sum(1, keepdims=True)) ** 2).sum(1)

    a, h = np.asarray(alphas), 1e-5
    fd = np.stack([(f_per_draw(a + h * e) - f_per_draw(a - h * e)) / (2 * h)
                   for e in np.eye(3)], axis=1)
    se_path, se_fd = pathwise.std(0) / np.sqrt(n), fd.std(0) / np.sqrt(n)
    assert np.all(np.abs(pathwise.mean(0) - fd.mean(0)) < 5 * np.hypot(se_path, se_fd))
    assert np.all(np.abs(pathwise.mean(0) - want) < 5 * se_path), (pathwise.mean(0), want)
    assert np.all(np.abs(fd.mean(0) - want) < 5 * se_fd)


def test_relaxation_values_share_one_signature():
    key, step = jax.random.key(0), jnp.int32(3)
    alphas = {"normal": LOGITS}
    for name in relax.RELAXATIONS:
        r = relax.get(name)
        w = r.weights(key, alphas, step)
        assert jax.tree.structure(w) == jax.tree.structure(alphas)
        assert w["normal"].shape == LOGITS.shape
        assert r.expected(alphas)["normal"].shape == LOGITS.shape
    np.testing.assert_array_equal(relax.get("softmax").weights(key, alphas, step)["normal"],
                                  relax.softmax(alphas)["normal"])
    # an annealed temperature: a schedule of the step
    gdas = relax.gumbel_relaxation(lambda s: 10.0 * 0.5 ** s, hard=False)
    np.testing.assert_allclose(gdas.weights(key, LOGITS, step),
                               relax.gumbel_softmax(key, LOGITS, tau=10.0 / 8), rtol=1e-6)
    with pytest.raises(ValueError, match="tau=0"):
        relax.gumbel_relaxation(0)
    with pytest.raises(ValueError, match="relaxation 'softmin'.*softmax"):
        relax.get("softmin")


def test_zero_one_penalty_value_and_gradient():
    alphas = {"normal": LOGITS, "reduce": LOGITS[:1]}
    pen = relax.zero_one_penalty(10.0)
    s = 1 / (1 + np.exp(-np.concatenate([np.ravel(LOGITS), np.ravel(LOGITS[:1])])))
    assert float(pen(alphas, 0)) == pytest.approx(-10.0 * np.mean((s - 0.5) ** 2), rel=1e-5)
    g = pen.__call__  # the gradient pushes every sigmoid away from 0.5
    grad = jax.grad(lambda a: g(a, 0))(alphas)
    sig = relax.sigmoid(alphas)
    for k in alphas:
        sg = np.asarray(sig[k])
        want = -10.0 * 2 * (sg - 0.5) * sg * (1 - sg) / s.size
        np.testing.assert_allclose(grad[k], want, rtol=1e-5, atol=1e-9)
    assert relax.sigmoid_relaxation().penalty is None
