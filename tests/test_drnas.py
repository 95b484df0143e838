"""DrNAS: the Dirichlet relaxation's pathwise gradient is unbiased, and its KL penalty to
the anchor Dirichlet matches a Monte Carlo estimate with scipy's densities."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxnas import relax

ALPHAS = jnp.array([[0.5, -0.3, 1.2, 0.0], [-1.0, 0.8, 0.1, 0.4]], jnp.float32)
V = jnp.array([[1.0, -2.0, 0.5, 3.0], [0.3, 1.5, -1.0, 2.0]], jnp.float32)


def test_mean_of_pathwise_gradient_samples_is_the_gradient_of_the_expectation():
    """f(w) = sum(v * w): E[f] = sum(v * c / sum(c)), c = elu(a) + 1, in closed form; the
    mean of 5,000 sampled gradients d f(sample) / d a agrees within 4 standard errors."""
    def sample_grad(key):
        return jax.grad(lambda a: jnp.sum(V * relax.dirichlet(key, a)))(ALPHAS)

    grads = np.asarray(jax.jit(jax.vmap(sample_grad))(
        jax.random.split(jax.random.key(0), 5_000)), np.float64)
    exact = np.asarray(jax.grad(lambda a: jnp.sum(V * relax.dirichlet_mean(a)))(ALPHAS))
    mean, se = grads.mean(0), grads.std(0) / np.sqrt(len(grads))
    assert np.all(np.abs(mean - exact) <= 4 * se + 1e-6), (mean, exact, se)
    assert np.abs(exact).max() > 10 * se.max()  # the check can tell the sign apart


def test_kl_to_the_anchor_matches_monte_carlo_and_is_zero_at_the_anchor():
    anchor = 1.5
    got = float(relax.dirichlet_kl(ALPHAS, anchor))
    c = np.asarray(relax.concentration(ALPHAS), np.float64)
    rng = np.random.default_rng(0)
    mc = 0.0
    for row in c:
        x = rng.dirichlet(row, size=40_000)
        p = stats.dirichlet(row).logpdf(x.T)
        q = stats.dirichlet(np.full(len(row), anchor)).logpdf(x.T)
        mc += np.mean(p - q)
    np.testing.assert_allclose(got, mc, rtol=0.02)
    # elu(a) + 1 = anchor where a = anchor - 1 (>= 0 here): KL exactly 0
    assert abs(float(relax.dirichlet_kl(jnp.full((3, 4), anchor - 1.0), anchor))) < 1e-5
    pen = relax.dirichlet_relaxation(kl_weight=0.5, anchor=anchor).penalty
    np.testing.assert_allclose(float(pen(ALPHAS, 0)), 0.5 * got, rtol=1e-6)
