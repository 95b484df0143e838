"""The DARTS strategy: optimiser wiring against hand updates, every estimator, derive."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import hypergrad
from jaxnas.spaces import genotypes
from jaxnas.spaces.ops import PRIMITIVES
from jaxnas.strategies import darts as darts_lib


class ToySupernet(nn.Module):
    """A cheap stand-in with the supernet interface: arch in, logits out, BatchNorm."""

    primitives: tuple = PRIMITIVES
    steps: int = 4
    multiplier: int = 4

    @nn.compact
    def __call__(self, x, arch, train=True):
        h = jnp.tanh(nn.Dense(6, name="stem")(x.reshape(x.shape[0], -1)))
        for cell in ("normal", "reduce"):
            w = arch[cell]  # (14, 8): each edge mixes 8 candidate maps of h
            cand = jnp.stack([jnp.tanh(nn.Dense(6, name=f"{cell}_op{k}")(h))
                              for k in range(len(self.primitives))])  # (8, B, 6)
            h = h + jnp.einsum("ek,kbd->bd", w, cand) / w.shape[0]
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.Dense(3, name="head")(h)


def _batch(seed, n=6):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.normal(size=(n, 2, 2, 1)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 3, size=n), jnp.int32)}


TRAIN, VAL = _batch(0), _batch(1)
# The strategy's estimators run jitted, the references below eagerly: they agree to float32
# rounding, amplified where an estimator subtracts nearly equal terms (the finite
# difference divides a difference of two gradients by 2r ~ 0.02 / ||v||).
TOL = {"first_order": 1e-5, "darts_fd": 1e-3, "darts_exact": 1e-4, "amended": 1e-4,
       "implicit_cg": 1e-4, "implicit_neumann": 1e-4}


def _strategy(estimator="first_order", **kw):
    return darts_lib.darts(ToySupernet(), estimator=estimator, w_schedule=0.1,
                           implicit_damping=1.0, **kw)


def _ce(model, state, params, alphas, batch):
    logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats},
                            batch["image"], darts_lib.arch_weights(alphas),
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def test_first_order_step_equals_hand_written_darts_update():
    """Adam on the validation gradient of alpha, then clipped SGD+momentum on w."""
    model = ToySupernet()
    strat = _strategy()
    state = strat.init(jax.random.key(0), TRAIN["image"])
    new, metrics = jax.jit(strat.step)(state, TRAIN, VAL)

    g_a = jax.grad(lambda a: _ce(model, state, state.params, a, VAL))(state.alphas)
    g_a = jax.tree.map(lambda g, a: g + 1e-3 * a, g_a, state.alphas)  # coupled L2
    # Adam's first step: m_hat = g, v_hat = g^2 -> update = -lr * g / (|g| + eps)
    want_a = jax.tree.map(lambda a, g: a - 3e-4 * g / (jnp.abs(g) + 1e-8), state.alphas, g_a)
    for k in ("normal", "reduce"):
        np.testing.assert_allclose(new.alphas[k], want_a[k], rtol=1e-5, atol=1e-8)

    g_w = jax.grad(lambda p: _ce(model, state, p, new.alphas, TRAIN))(state.params)
    norm = optax.tree.norm(g_w)
    scale = jnp.minimum(1.0, 5.0 / norm)
    want_w = jax.tree.map(lambda w, g: w - 0.1 * (g * scale + 3e-4 * w), state.params, g_w)
    for got, want in zip(jax.tree.leaves(new.params), jax.tree.leaves(want_w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert int(new.step) == 1
    np.testing.assert_allclose(metrics["hypergrad_norm"],
                               optax.tree.norm(jax.grad(
                                   lambda a: _ce(model, state, state.params, a, VAL))(
                                       state.alphas)), rtol=1e-5)


def _recording_tx() -> optax.GradientTransformation:
    """An "optimizer" that leaves the alphas alone and keeps the last gradient as its
    state: the step's full architecture gradient, exactly, for comparison."""
    return optax.GradientTransformation(
        init=lambda p: jax.tree.map(jnp.zeros_like, p),
        update=lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g))


@pytest.mark.parametrize("estimator", darts_lib.ESTIMATORS)
def test_every_estimator_matches_hypergrad_and_steps(estimator):
    """The step's architecture gradient is exactly the named `hypergrad` estimator's:
    every component of the full vector, not only its norm."""
    model = ToySupernet()
    strat = _strategy(estimator, a_tx=_recording_tx())
    state = strat.init(jax.random.key(1), TRAIN["image"])
    new, metrics = jax.jit(strat.step)(state, TRAIN, VAL)
    assert all(np.isfinite(float(v)) for v in metrics.values())

    def loss(p, a, b):
        return _ce(model, state, p, a, b)

    args = (loss, loss, state.params, state.alphas, TRAIN, VAL)
    want = {
        "first_order": lambda: hypergrad.first_order(*args),
        "darts_fd": lambda: hypergrad.darts_second_order(*args, lr=0.1,
                                                         method="finite_difference"),
        "darts_exact": lambda: hypergrad.darts_second_order(*args, lr=0.1, method="exact"),
        "amended": lambda: hypergrad.amended(*args, lr=0.1),
        "implicit_cg": lambda: hypergrad.implicit(*args, method="cg", iters=5, damping=1.0),
        "implicit_neumann": lambda: hypergrad.implicit(*args, method="neumann", iters=5,
                                                       damping=1.0, alpha=0.01),
    }[estimator]()
    got = new.a_opt
    for k in ("normal", "reduce"):
        assert got[k].shape == (14, 8)
        np.testing.assert_allclose(got[k], want[k], rtol=TOL[estimator],
                                   atol=TOL[estimator] * float(jnp.abs(want[k]).max()))
    jax.tree.map(np.testing.assert_array_equal, new.alphas, state.alphas)
    np.testing.assert_allclose(metrics["hypergrad_norm"], optax.tree.norm(want),
                               rtol=TOL[estimator])


def test_unrolled_momentum_option_changes_the_second_order_gradient():
    plain = _strategy("darts_exact")
    momentum = _strategy("darts_exact", unroll_momentum=True)
    state = plain.init(jax.random.key(2), TRAIN["image"])
    state, _ = jax.jit(plain.step)(state, TRAIN, VAL)  # a non-zero momentum buffer
    _, m_plain = jax.jit(plain.step)(state, TRAIN, VAL)
    _, m_mom = jax.jit(momentum.step)(state, TRAIN, VAL)
    assert float(m_plain["hypergrad_norm"]) != float(m_mom["hypergrad_norm"])


def test_cosine_epoch_schedule_is_per_epoch_and_hits_the_ends():
    sched = darts_lib.cosine_epoch_schedule(0.025, 0.001, epochs=4, steps_per_epoch=10)
    values = np.array([float(sched(jnp.asarray(s))) for s in range(40)])
    assert np.all(values[:10] == values[0]) and values[0] == pytest.approx(0.025)
    assert values[15] == pytest.approx(0.001 + 0.5 * 0.024 * (1 + np.cos(np.pi / 4)))
    assert np.all(np.diff(values) <= 1e-12)
    assert float(sched(jnp.asarray(40))) == pytest.approx(0.001)


def test_init_alphas_scale_and_derive_gives_a_valid_genotype():
    strat = _strategy()
    state = strat.init(jax.random.key(3), TRAIN["image"])
    for a in state.alphas.values():
        assert a.shape == (14, 8) and 0 < float(jnp.std(a)) < 3e-3
    g = strat.derive(state)
    genotypes.validate(g)
    assert len(g.normal) == 8 and "none" not in {op for op, _ in g.normal + g.reduce}


def test_unknown_estimator_is_rejected_with_the_allowed_names():
    with pytest.raises(ValueError, match="estimator='third'.*first_order"):
        _strategy("third")


def test_warmup_trains_the_weights_only_then_the_full_step():
    """During the first `warmup_steps` a step is `weight_step` (alphas and their
    optimiser untouched); from then on `arch_step` then `weight_step`."""
    plain, warm = _strategy(), _strategy(warmup_steps=2)
    weight_step = jax.jit(plain.parts["weight_step"])
    arch_step = jax.jit(plain.parts["arch_step"])
    step = jax.jit(warm.step)
    state = want = init = warm.init(jax.random.key(4), TRAIN["image"])
    for i in range(4):
        state, metrics = step(state, TRAIN, VAL)
        if i < 2:
            want, _ = weight_step(want, TRAIN)
            assert float(metrics["hypergrad_norm"]) == 0.0
        else:
            want, _ = weight_step(arch_step(want, TRAIN, VAL)[0], TRAIN)
            assert float(metrics["hypergrad_norm"]) > 0.0
        # the same operations, compiled as one program or as two: equal up to rounding
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                             atol=1e-7),
                     state.replace(key=None), want.replace(key=None))
        np.testing.assert_array_equal(jax.random.key_data(state.key),
                                      jax.random.key_data(want.key))
        if i < 2:  # ...and in the warm-up the alphas and their Adam state not touched
            jax.tree.map(np.testing.assert_array_equal, (state.alphas, state.a_opt),
                         (init.alphas, init.a_opt))
    assert not np.array_equal(state.alphas["normal"], init.alphas["normal"])
    with pytest.raises(ValueError, match="warmup_steps=-1"):
        _strategy(warmup_steps=-1)
