"""GDAS over the bilevel core: the annealed temperature, one-hot op weights in value with
the soft sample's gradient (straight-through), and a checkpointed 2+2-step run equal to a
4-step one (the sample's key is in the state)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import checkpoint as ckpt_lib
from jaxnas import relax
from jaxnas.losses import cross_entropy
from jaxnas.strategies import gdas as gdas_lib
from test_darts_strategy import TRAIN, VAL, ToySupernet
from test_fairdarts import _recording_tx


def test_tau_anneals_linearly_from_tau_max_to_tau_min():
    tau = relax.linear_schedule(10.0, 0.1, 100)
    got = np.array([tau(jnp.int32(s)) for s in (0, 33, 99, 150)])
    np.testing.assert_allclose(got, [10.0, 10.0 - 9.9 * 33 / 99, 0.1, 0.1], rtol=1e-6)


def test_arch_gradient_is_straight_through_the_soft_sample_at_a_one_hot_forward():
    """The supernet sees a one-hot per edge; the alpha gradient is the soft sample's
    Jacobian (softmax'((a + g) / tau) / tau, written out) times dL/dweights at that
    one-hot: the GDAS estimator, checked against numpy."""
    model = ToySupernet()
    total, step = 10, 4
    strat = gdas_lib.gdas(model, total_steps=total, w_schedule=0.1, a_tx=_recording_tx())
    state = strat.init(jax.random.key(0), TRAIN["image"])
    state = state.replace(step=jnp.int32(step),
                          alphas=jax.tree.map(lambda a: a + jnp.linspace(
                              -1, 1, a.size).reshape(a.shape), state.alphas))
    new, _ = jax.jit(strat.arch_step)(state, TRAIN, VAL)
    tau = 10.0 - 9.9 * step / (total - 1)
    _, k_sample = jax.random.split(state.key)
    keys = jax.random.split(k_sample, 2)  # one per leaf, in leaf order (normal, reduce)
    hard, soft = {}, {}
    for i, k in enumerate(("normal", "reduce")):
        a = np.asarray(state.alphas[k], np.float64)
        z = (a + np.asarray(jax.random.gumbel(keys[i], a.shape), np.float64)) / tau
        e = np.exp(z - z.max(-1, keepdims=True))
        soft[k] = e / e.sum(-1, keepdims=True)
        hard[k] = np.eye(a.shape[-1])[soft[k].argmax(-1)]

    def loss_of_weights(weights):
        logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                VAL["image"], weights, mutable=["batch_stats"])
        return cross_entropy(logits, VAL["label"])

    d = jax.grad(loss_of_weights)(jax.tree.map(lambda h: jnp.asarray(h, jnp.float32), hard))
    for k in ("normal", "reduce"):
        dk = np.asarray(d[k], np.float64)
        want = soft[k] * (dk - (soft[k] * dk).sum(-1, keepdims=True)) / tau
        np.testing.assert_allclose(new.a_opt[k], want, rtol=2e-3, atol=1e-7)
        # and the forward weights were the one-hot: the relaxation's own sample
        w = relax.gumbel_softmax(k_sample, state.alphas, tau=tau, hard=True)[k]
        np.testing.assert_array_equal(np.asarray(w), hard[k])


def test_a_checkpointed_two_plus_two_step_run_equals_a_four_step_run(tmp_path):
    strat = gdas_lib.gdas(ToySupernet(), total_steps=4, w_schedule=0.1,
                          a_tx=optax.adam(0.1))
    step = jax.jit(strat.step)
    init = strat.init(jax.random.key(3), TRAIN["image"])
    straight = init
    for _ in range(4):
        straight, _ = step(straight, TRAIN, VAL)

    half = init
    for _ in range(2):
        half, _ = step(half, TRAIN, VAL)
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.save(2, half, {})
    ck.wait()
    resumed, _, at = ckpt_lib.Checkpointer(str(tmp_path)).restore(init)
    assert at == 2
    for _ in range(2):
        resumed, _ = step(resumed, TRAIN, VAL)
    assert not np.array_equal(np.asarray(straight.alphas["normal"]),
                              np.asarray(init.alphas["normal"]))
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                        jax.tree.map(jax.random.key_data, (straight.key,)) +
                        (straight.params, straight.alphas),
                        jax.tree.map(jax.random.key_data, (resumed.key,)) +
                        (resumed.params, resumed.alphas))
    assert all(jax.tree.leaves(same))


def test_refuses_tau_out_of_order():
    with pytest.raises(ValueError, match="tau_min"):
        gdas_lib.gdas(ToySupernet(), total_steps=4, tau_max=0.1, tau_min=1.0)


def _mixed_op_outputs(x, variables):
    """Every candidate's output op_k(x) of a LoopMixedOp, from the all-ops form fed each
    one-hot in turn (the independent reference for the single-path form)."""
    from jaxnas.supernet.darts import LoopMixedOp

    dense = LoopMixedOp(4, 1)
    return [dense.apply(variables, x, jax.nn.one_hot(k, 8), True,
                        mutable=["batch_stats"])[0] for k in range(8)]


def test_single_path_runs_the_chosen_op_with_gdas_gradients():
    """Value: op_k*(x) for k* = argmax w (one-hot or not). Gradient of <g, out> in w:
    <g, op_k*(x)> at k*, sum(g) elsewhere (GDAS' forward_gdas); only k*'s BatchNorm
    statistics move."""
    from jaxnas.spaces.ops import PRIMITIVES
    from jaxnas.supernet.darts import LoopMixedOp

    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    g = jax.random.normal(jax.random.key(1), (2, 6, 6, 4))
    single = LoopMixedOp(4, 1, single_path=True)
    variables = single.init(jax.random.key(2), x, jnp.full(8, 1 / 8), True)
    outs = _mixed_op_outputs(x, variables)
    for k in (1, 4, 7):  # max pool (BatchNorm), sep_conv_3x3, dil_conv_5x5
        w = jax.nn.one_hot(k, 8) * 0.7 + 0.3 / 8  # argmax k, not one-hot
        (y, stats) = single.apply(variables, x, w, True, mutable=["batch_stats"])
        np.testing.assert_allclose(y, outs[k], rtol=1e-5, atol=1e-6)
        grad = jax.grad(lambda w: jnp.sum(g * single.apply(
            variables, x, w, True, mutable=["batch_stats"])[0]))(w)
        want = np.full(8, float(jnp.sum(g)))
        want[k] = float(jnp.sum(g * outs[k]))
        np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-4)
        moved = {name for name, v in stats["batch_stats"].items()
                 if any(not np.array_equal(a, b) for a, b in zip(
                     jax.tree.leaves(v),
                     jax.tree.leaves(variables["batch_stats"][name])))}
        assert moved <= {PRIMITIVES[k], PRIMITIVES[k] + "_bn"} and moved


def test_single_path_supernet_equals_the_all_ops_one_at_one_hot_weights():
    from jaxnas.spaces import cells
    from jaxnas.supernet.darts import DartsSupernet

    kw = dict(channels=4, num_classes=3, layers=3, steps=2, multiplier=2, mixed_op="loop")
    dense, single = DartsSupernet(**kw), DartsSupernet(**kw, single_path=True)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    e = cells.num_edges(2)
    variables = dense.init(jax.random.key(1), x, {c: jnp.full((e, 8), 1 / 8) for c in
                                                  ("normal", "reduce")})
    idx = jax.random.randint(jax.random.key(3), (2, e), 0, 8)
    w = {c: jax.nn.one_hot(idx[i], 8) for i, c in enumerate(("normal", "reduce"))}
    a = dense.apply(variables, x, w, train=True, mutable=["batch_stats"])[0]
    b = single.apply(variables, x, w, train=True, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="single_path"):
        DartsSupernet(**{**kw, "mixed_op": "fused"}, single_path=True).init(
            jax.random.key(1), x, w)


def test_single_path_config_is_refused_off_the_loop_mixed_op():
    from jaxnas import config as config_lib
    from jaxnas import search
    from jaxnas.errors import ConfigError

    cfg = config_lib.load_config("experiments/gdas_digits.py")
    config_lib.apply_overrides(cfg, ["gdas.single_path=True", "model.mixed_op=fused"])
    with pytest.raises(ConfigError, match="gdas.single_path=True is not allowed"):
        search.validate_config(cfg)
    config_lib.apply_overrides(cfg, ["model.mixed_op=loop"])
    search.validate_config(cfg)
