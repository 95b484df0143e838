"""The bilevel core: `darts(...)` over it is bit for bit the step it replaced (a frozen copy
in `darts_reference.py`), the PRNG key is split once per half, a random relaxation's sample
comes from that key and is shared by the estimator's losses, the estimator registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import darts_reference
from jaxnas import hypergrad, optim, relax
from jaxnas.losses import cross_entropy
from jaxnas.strategies import darts as darts_lib
from jaxnas.strategies import estimators
from test_darts_strategy import TRAIN, VAL, ToySupernet, _batch

old_lib_weights = darts_reference.arch_weights
SHARED = ("step", "params", "batch_stats", "alphas", "w_opt", "a_opt")
SCHEDULE = optim.cosine_epoch_schedule(0.1, 0.01, epochs=3, steps_per_epoch=1)


def _equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _both(estimator, **kw):
    settings = dict(estimator=estimator, w_schedule=SCHEDULE, implicit_damping=1.0, **kw)
    return (darts_lib.darts(ToySupernet(), **settings),
            darts_reference.darts(ToySupernet(), **settings))


CASES = [(e, {}) for e in darts_lib.ESTIMATORS] + [
    ("darts_exact", {"unroll_momentum": True}),
    ("darts_fd", {"unroll_momentum": True}),
    ("first_order", {"warmup_steps": 2}),
]


@pytest.mark.parametrize("estimator,kw", CASES,
                         ids=[e + "".join(f"-{k}" for k in kw) for e, kw in CASES])
def test_darts_over_the_core_is_bit_for_bit_the_old_step(estimator, kw):
    """States (every field the old state had) and metrics identical to the bit over
    three steps on different batches, for every estimator and option."""
    new, old = _both(estimator, **kw)
    s_new = new.init(jax.random.key(0), TRAIN["image"])
    s_old = old.init(jax.random.key(0), TRAIN["image"])
    for f in SHARED:
        _equal(getattr(s_new, f), getattr(s_old, f))
    step_new, step_old = jax.jit(new.step), jax.jit(old.step)
    for i in range(3):
        train, val = _batch(10 + 2 * i), _batch(11 + 2 * i)
        s_new, m_new = step_new(s_new, train, val)
        s_old, m_old = step_old(s_old, train, val)
        for f in SHARED:
            _equal(getattr(s_new, f), getattr(s_old, f))
        assert m_new.keys() == m_old.keys()
        _equal(dict(m_new), dict(m_old))
    assert not np.array_equal(s_new.alphas["normal"], new.init(
        jax.random.key(0), TRAIN["image"]).alphas["normal"])
    assert new.derive(s_new) == old.derive(s_old)
    _equal(new.arch_weights(s_new), old_lib_weights(s_old.alphas))
    _equal(new.evaluate(s_new, VAL), old.evaluate(s_old, VAL))


def test_the_halves_are_the_old_halves_bit_for_bit():
    """`parts` (what the benchmarks time) runs the same computations as before."""
    new, old = _both("darts_fd")
    s_new = new.init(jax.random.key(1), TRAIN["image"])
    s_old = old.init(jax.random.key(1), TRAIN["image"])
    assert set(new.parts) == {"arch_step", "weight_step"}
    a_new, ma_new = jax.jit(new.parts["arch_step"])(s_new, TRAIN, VAL)
    a_old, ma_old = jax.jit(old.parts["arch_step"])(s_old, TRAIN, VAL)
    w_new, mw_new = jax.jit(new.parts["weight_step"])(a_new, TRAIN)
    w_old, mw_old = jax.jit(old.parts["weight_step"])(a_old, TRAIN)
    for f in SHARED:
        _equal(getattr(a_new, f), getattr(a_old, f))
        _equal(getattr(w_new, f), getattr(w_old, f))
    _equal((dict(ma_new), dict(mw_new)), (dict(ma_old), dict(mw_old)))


def _key_data(key):
    return np.asarray(jax.random.key_data(key))


def test_each_half_splits_the_state_key_once():
    strat = darts_lib.darts(ToySupernet(), w_schedule=0.1)
    state = strat.init(jax.random.key(2), TRAIN["image"])
    np.testing.assert_array_equal(_key_data(state.key),
                                  _key_data(jax.random.fold_in(jax.random.key(2), 1)))
    after_arch, _ = strat.arch_step(state, TRAIN, VAL)
    np.testing.assert_array_equal(_key_data(after_arch.key),
                                  _key_data(jax.random.split(state.key)[0]))
    after_weight, _ = strat.weight_step(after_arch, TRAIN)
    np.testing.assert_array_equal(_key_data(after_weight.key),
                                  _key_data(jax.random.split(after_arch.key)[0]))
    stepped, _ = jax.jit(strat.step)(state, TRAIN, VAL)
    np.testing.assert_array_equal(_key_data(stepped.key), _key_data(after_weight.key))


def _recording_tx():
    return optax.GradientTransformation(
        init=lambda p: jax.tree.map(jnp.zeros_like, p),
        update=lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g))


def test_a_random_relaxation_draws_from_the_state_key_and_shares_the_sample():
    """With hard Gumbel weights, the arch gradient is `hypergrad.darts_second_order` of the
    loss at the one sample drawn from the split state key (train and validation losses,
    perturbed weights and all): a fresh sample per loss evaluation would not match."""
    model = ToySupernet()
    gumbel = relax.gumbel_relaxation(lambda s: 2.0 / (1.0 + s), hard=True)
    strat = darts_lib.darts(model, estimator="darts_exact", w_schedule=0.1, relax=gumbel,
                            a_tx=_recording_tx())
    state = strat.init(jax.random.key(3), TRAIN["image"])
    state = state.replace(step=jnp.int32(1))
    new, _ = jax.jit(strat.arch_step)(state, TRAIN, VAL)
    k_sample = jax.random.split(state.key)[1]

    def loss(params, alphas, batch):
        weights = relax.gumbel_softmax(k_sample, alphas, tau=1.0, hard=True)
        logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats},
                                batch["image"], weights, mutable=["batch_stats"])
        return cross_entropy(logits, batch["label"])

    want = hypergrad.darts_second_order(loss, loss, state.params, state.alphas, TRAIN, VAL,
                                        lr=0.1, method="exact")
    for k in ("normal", "reduce"):
        np.testing.assert_allclose(new.a_opt[k], want[k], rtol=1e-4,
                                   atol=1e-4 * float(jnp.abs(want[k]).max()))
    # the same state gives the same step; another key another sample
    again, _ = jax.jit(strat.arch_step)(state, TRAIN, VAL)
    _equal(again.a_opt, new.a_opt)
    other, _ = jax.jit(strat.arch_step)(state.replace(key=jax.random.key(99)), TRAIN, VAL)
    assert not np.allclose(other.a_opt["normal"], new.a_opt["normal"])


def test_momentum_trace_is_found_by_type_not_position():
    params = {"w": jnp.arange(3.0)}
    tx = optim.weight_optimizer(0.1)
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(3)}, state, params)
    assert optim.momentum_trace(state) is state[2].trace
    np.testing.assert_array_equal(optim.momentum_trace(state)["w"], jnp.ones(3) + 3e-4
                                  * jnp.arange(3.0))
    reordered = optax.chain(optax.trace(0.9), optax.scale(-0.1))
    assert optim.momentum_trace(reordered.init(params)) is not None
    with pytest.raises(ValueError, match="no optax.trace"):
        optim.momentum_trace(optax.adam(0.1).init(params))


def test_estimator_registry_wraps_hypergrad_functions():
    assert darts_lib.ESTIMATORS == ("first_order", "darts_fd", "darts_exact", "amended",
                                    "implicit_cg", "implicit_neumann")
    with pytest.raises(ValueError, match="estimator='third'.*first_order"):
        estimators.get("third")

    # a quadratic: every estimator is a function of (losses, w, a, batches, lr, w_opt)
    def train(w, a, b):
        return 0.5 * jnp.sum(w ** 2) - jnp.sum(w * a) * b

    def val(w, a, b):
        return 0.5 * jnp.sum((w - b) ** 2) + 0.1 * jnp.sum(a ** 2)

    w, a = jnp.array([0.5, -1.0]), jnp.array([0.2, 0.3])
    args = (train, val, w, a, 1.0, 2.0)
    w_opt = optim.weight_optimizer(0.1).init(w)
    for name, fn in [("first_order", functools.partial(hypergrad.first_order)),
                     ("amended", functools.partial(hypergrad.amended, lr=0.1)),
                     ("implicit_cg", functools.partial(hypergrad.implicit, method="cg",
                                                       iters=5, damping=0.0))]:
        np.testing.assert_array_equal(
            estimators.get(name)(*args, lr=jnp.asarray(0.1), w_opt=w_opt), fn(*args))
