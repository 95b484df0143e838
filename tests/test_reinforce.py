"""REINFORCE: the policy gradient against exact enumeration, tell's update by hand,
and the search finding a known optimum."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas.strategies import reinforce as rl

COUNTS = (3, 2, 3)  # the middle layer's third logit is masked out


def _softmax_rows(logits):
    out = []
    for l, k in enumerate(COUNTS):
        z = np.exp(logits[l, :k] - logits[l, :k].max())
        out.append(z / z.sum())
    return out


def test_policy_gradient_is_the_exact_expectation():
    """sum_a p(a) (f(a) - b) grad log p(a) over all 18 architectures equals (i) a
    hand loop with grad log softmax = onehot - p, and (ii) autodiff of the exact
    expectation sum_a p(a) f(a) (the baseline term integrates to zero)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(3, 3))
        archs = np.array(list(itertools.product(*(range(k) for k in COUNTS))))
        f = rng.normal(size=len(archs))
        b = 0.37
        probs = _softmax_rows(logits)
        p = np.array([np.prod([probs[l][a[l]] for l in range(3)]) for a in archs])
        assert abs(p.sum() - 1) < 1e-12
        loop = np.zeros((3, 3))
        for a, pa, fa in zip(archs, p, f):
            for l, k in enumerate(COUNTS):
                loop[l, :k] += pa * (fa - b) * (np.eye(k)[a[l]] - probs[l])
        got = rl.policy_gradient(jnp.asarray(logits), COUNTS, jnp.asarray(archs),
                                 jnp.asarray(f - b), jnp.asarray(p))
        np.testing.assert_allclose(np.asarray(got), loop, atol=1e-13)

        def expectation(lg):
            q = jnp.exp(rl.log_prob(lg, COUNTS, jnp.asarray(archs)))
            return jnp.sum(q * f)

        np.testing.assert_allclose(np.asarray(got),
                                   np.asarray(jax.grad(expectation)(logits)) *
                                   rl.choice_mask(COUNTS), atol=1e-13)
        # the entropy term: autodiff of the enumerated entropy -sum p log p
        ent = rl.policy_gradient(jnp.asarray(logits), COUNTS, jnp.asarray(archs),
                                 jnp.zeros(len(archs)), jnp.asarray(p), 1.0)

        def exact_entropy(lg):
            q = jnp.exp(rl.log_prob(lg, COUNTS, jnp.asarray(archs)))
            return -jnp.sum(q * jnp.log(q))

        np.testing.assert_allclose(np.asarray(ent),
                                   np.asarray(jax.grad(exact_entropy)(logits)) *
                                   rl.choice_mask(COUNTS), atol=1e-12)


def test_tell_is_sgd_on_the_sampled_gradient_with_a_moving_baseline():
    with jax.enable_x64(True):
        lr, decay = 0.5, 0.8
        state = rl.init(jax.random.key(0), COUNTS, batch_size=4, baseline_decay=decay,
                        entropy_weight=0.0, optimizer=optax.sgd(lr), init_scale=0.3)
        logits0 = np.asarray(state.logits)
        a1 = np.array([[0, 1, 2], [2, 0, 0], [1, 1, 1], [0, 0, 2]])
        r1 = np.array([1.0, 2.0, np.nan, 4.0])  # NaN: zero weight, never best
        s1 = rl.tell(state, jnp.asarray(a1), jnp.asarray(r1))
        keep = np.isfinite(r1)
        b1 = r1[keep].mean()  # the first batch is its own baseline

        def step(logits, archs, rewards, baseline):
            probs = _softmax_rows(logits)
            g = np.zeros((3, 3))
            for a, r in zip(archs[keep], rewards[keep]):
                for l, k in enumerate(COUNTS):
                    g[l, :k] += (r - baseline) * (np.eye(k)[a[l]] - probs[l]) / keep.sum()
            return logits + lr * g

        np.testing.assert_allclose(np.asarray(s1.logits), step(logits0, a1, r1, b1),
                                   atol=1e-12)
        assert float(s1.baseline) == pytest.approx(b1)
        assert float(s1.best_fitness) == 4.0 and list(s1.best_arch) == [0, 0, 2]
        a2 = a1[::-1].copy()
        r2 = np.array([0.5, 1.5, 2.5, 3.5])
        s2 = rl.tell(s1, jnp.asarray(a2), jnp.asarray(r2))
        keep = np.ones(4, bool)
        np.testing.assert_allclose(np.asarray(s2.logits),
                                   step(np.asarray(s1.logits), a2, r2, b1), atol=1e-12)
        assert float(s2.baseline) == pytest.approx(decay * b1 + (1 - decay) * r2.mean())
        assert int(s2.best_index) == 3 and float(s2.best_fitness) == 4.0


TARGET = np.array([3, 0, 2, 1, 3, 0])


def _matches(archs):
    return jnp.sum(archs == jnp.asarray(TARGET), axis=1).astype(jnp.float32)


def test_reinforce_finds_the_known_optimum():
    result = rl.reinforce(_matches, (4,) * 6, batch_size=16, num_steps=60,
                          key=jax.random.key(0), learning_rate=0.1)
    assert result.history.archs.shape == (960, 6)
    assert float(result.best_fitness) == 6.0
    np.testing.assert_array_equal(np.asarray(result.best_arch), TARGET)
    probs = np.asarray(result.probabilities)
    # the policy concentrates on the optimum: uniform at first, then on the target
    np.testing.assert_allclose(probs[0], 0.25)
    assert np.all(probs[-1][np.arange(6), TARGET] > 0.8)
    # the mean reward rises from chance (6 / 4 = 1.5)
    fits = np.asarray(result.history.fitness).reshape(60, 16)
    assert fits[:5].mean() < 2.5 and fits[-5:].mean() > 5.0


def test_bad_arguments_refused():
    with pytest.raises(TypeError, match="sequence"):
        rl.reinforce(_matches, 4, batch_size=2, num_steps=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_steps"):
        rl.reinforce(_matches, (4,) * 6, batch_size=2, num_steps=0,
                     key=jax.random.key(0))
    with pytest.raises(ValueError, match="controller='gru'"):
        rl.reinforce(_matches, (4,) * 6, batch_size=2, num_steps=1,
                     key=jax.random.key(0), controller="gru")
    with pytest.raises(ValueError, match="baseline_decay"):
        rl.reinforce(_matches, (4,) * 6, batch_size=2, num_steps=1,
                     key=jax.random.key(0), baseline_decay=1.0)


def test_lstm_controller_is_a_normalised_autoregressive_policy():
    """exp(log p) sums to 1 over the space; samples follow it; the policy gradient
    with weights p(a) is the gradient of the enumerated expectation."""
    with jax.enable_x64(True):
        ctrl = rl.LSTMController(COUNTS, hidden=5)
        params = ctrl.init(jax.random.key(0))
        # non-zero heads, so that every decision depends on the prefix
        params = {**params, "head_w": jax.random.normal(jax.random.key(1),
                                                        params["head_w"].shape)}
        archs = jnp.asarray(list(itertools.product(*(range(k) for k in COUNTS))))
        f = jnp.asarray(np.random.default_rng(5).normal(size=len(archs)))

        @jax.jit
        def everything(params):
            logp = ctrl.log_prob(params, archs)
            draws = ctrl.sample(jax.random.key(2), params, 8000)
            got = ctrl.policy_gradient(params, archs, f - 0.2, jnp.exp(logp))
            want = jax.grad(lambda q: jnp.sum(jnp.exp(ctrl.log_prob(q, archs)) * f))(
                params)
            return jnp.exp(logp), draws, got, want

        p, draws, got, want = everything(params)
        p, draws = np.asarray(p), np.asarray(draws)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        index = {tuple(a): i for i, a in enumerate(np.asarray(archs))}
        freq = np.bincount([index[tuple(a)] for a in draws], minlength=len(p)) / 8000
        np.testing.assert_allclose(freq, p, atol=0.02)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)
        assert np.abs(np.asarray(got["w"])).max() > 0  # the LSTM itself learns


@pytest.mark.slow
def test_reinforce_with_the_lstm_controller_finds_the_optimum():
    # (at learning rate 0.1 or more this LSTM collapses onto a 5-match path early)
    result = rl.reinforce(_matches, (4,) * 6, batch_size=16, num_steps=80,
                          key=jax.random.key(0), learning_rate=0.05,
                          controller="lstm", lstm_hidden=16)
    np.testing.assert_array_equal(np.asarray(result.best_arch), TARGET)
    fits = np.asarray(result.history.fitness).reshape(80, 16)
    assert fits[:5].mean() < 2.5 and fits[-5:].mean() > 5.0
