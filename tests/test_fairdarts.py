"""FairDARTS over the bilevel core: sigmoid weights with a diagonal Jacobian, and the
zero-one loss added to the architecture gradient exactly."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.losses import cross_entropy
from jaxnas.strategies import fairdarts as fairdarts_lib
from test_darts_strategy import TRAIN, VAL, ToySupernet


def _recording_tx():
    """Leaves the alphas alone; its state is the last architecture gradient, exactly."""
    return optax.GradientTransformation(
        init=lambda p: jax.tree.map(jnp.zeros_like, p),
        update=lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g))


def _arch_grad(zero_one_weight, state=None):
    strat = fairdarts_lib.fairdarts(ToySupernet(), zero_one_weight=zero_one_weight,
                                    w_schedule=0.1, a_tx=_recording_tx())
    if state is None:
        state = strat.init(jax.random.key(0), TRAIN["image"])
        # spread the alphas so that the sigmoids are not all at 0.5
        state = state.replace(alphas=jax.tree.map(
            lambda a: a + jnp.linspace(-2.0, 2.0, a.size).reshape(a.shape), state.alphas))
    new, _ = jax.jit(strat.arch_step)(state, TRAIN, VAL)
    return state, new.a_opt


def test_the_architecture_gradient_is_the_op_gradient_times_the_sigmoid_slope():
    """Diagonal Jacobian: d loss / d alpha[e, k] = d loss / d weight[e, k] * s (1 - s),
    s = sigmoid(alpha[e, k]); no other op's weight enters (a softmax would couple them)."""
    model = ToySupernet()
    state, got = _arch_grad(0.0)

    def loss_of_weights(weights):
        logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                VAL["image"], weights, mutable=["batch_stats"])
        return cross_entropy(logits, VAL["label"])

    s = jax.tree.map(jax.nn.sigmoid, state.alphas)
    d_weights = jax.grad(loss_of_weights)(s)
    for k in ("normal", "reduce"):
        want = np.asarray(d_weights[k]) * np.asarray(s[k]) * (1 - np.asarray(s[k]))
        np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-9)


def test_the_zero_one_loss_adds_its_gradient_to_the_architecture_gradient():
    """The gradient with w = 10 minus the one with w = 0 is the zero-one loss' gradient,
    -w * 2 (s - 0.5) s (1 - s) / N, N the number of op weights (written out in numpy)."""
    state, plain = _arch_grad(0.0)
    _, fair = _arch_grad(10.0, state)
    n = sum(a.size for a in jax.tree.leaves(state.alphas))
    for k in ("normal", "reduce"):
        s = 1 / (1 + np.exp(-np.asarray(state.alphas[k], np.float64)))
        want = -10.0 * 2 * (s - 0.5) * s * (1 - s) / n
        np.testing.assert_allclose(np.asarray(fair[k]) - np.asarray(plain[k]), want,
                                   rtol=1e-3, atol=1e-8)
        # it pushes weights away from 0.5: descent raises alphas above 0, lowers below
        assert np.all(np.sign(-want) == np.sign(np.asarray(state.alphas[k])))


def test_evaluation_and_derivation_use_the_sigmoid_weights():
    model = ToySupernet()
    strat = fairdarts_lib.fairdarts(model, w_schedule=0.1)
    state = strat.init(jax.random.key(1), TRAIN["image"])
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         VAL["image"], jax.tree.map(jax.nn.sigmoid, state.alphas),
                         train=False)
    jax.tree.map(np.testing.assert_array_equal, strat.arch_weights(state),
                 jax.tree.map(jax.nn.sigmoid, state.alphas))
    sums = strat.evaluate(state, VAL)
    np.testing.assert_allclose(sums["loss_sum"], 6 * cross_entropy(logits, VAL["label"]),
                               rtol=1e-5)
    assert len(strat.derive(state).normal) == 8


def test_fairdarts_is_one_small_file_over_the_core():
    assert len(inspect.getsource(fairdarts_lib).splitlines()) <= 40


def test_derivation_is_darts_top2_which_on_sigmoids_ranks_by_the_raw_alphas():
    """spaces/darts.py derive (DARTS' top-2: per node the two inputs with the largest
    best non-none weight) on sigmoid weights: a sigmoid is increasing and elementwise, so
    the genotype is that of the raw alphas, not of their per-edge softmax, and no
    threshold is applied (every node keeps two inputs, as NetworkCIFAR needs)."""
    from jaxnas.spaces import genotypes
    strat = fairdarts_lib.fairdarts(ToySupernet(), w_schedule=0.1)
    state = strat.init(jax.random.key(2), TRAIN["image"])
    rng = np.random.default_rng(0)
    state = state.replace(alphas=jax.tree.map(
        lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), state.alphas))
    raw = jax.tree.map(np.asarray, state.alphas)
    assert strat.derive(state) == genotypes.derive(raw)
