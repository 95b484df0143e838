"""DARTS-: the auxiliary skip is edge = mixed(x) + beta * x on the supernet's mixed ops,
and at beta = 0 the strategy is DARTS to the bit."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import relax
from jaxnas.spaces.ops import PRIMITIVES
from jaxnas.strategies import darts as darts_lib
from jaxnas.strategies import darts_minus as dm
from jaxnas.supernet.darts import FusedEdgeGroup
from test_darts_strategy import TRAIN, VAL, ToySupernet

SKIP = PRIMITIVES.index("skip_connect")


def _edge(stride):
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (1, len(PRIMITIVES))))
    op = FusedEdgeGroup(stack=1, channels=4, stride=stride)
    variables = op.init(jax.random.key(2), x, w, True)
    run = jax.jit(lambda w: op.apply(variables, x, w, True, mutable=["batch_stats"])[0][0])
    return x, w, run


def test_auxiliary_skip_weights_give_mixed_plus_beta_x_on_a_normal_edge():
    x, w, run = _edge(1)
    beta = 0.37
    boosted = relax.auxiliary_skip_relaxation(
        relax.Relaxation(weights=lambda k, a, s: a, expected=lambda a: a), SKIP, beta
    ).weights(None, w, 0)
    np.testing.assert_allclose(run(boosted), run(w) + beta * x, rtol=1e-5, atol=1e-6)
    # on a stride-2 reduction edge skip_connect is a FactorizedReduce: mixed + beta * FR(x)
    x, w, run2 = _edge(2)
    fr = run2(jnp.zeros_like(w).at[0, SKIP].set(1.0))
    np.testing.assert_allclose(run2(w.at[0, SKIP].add(beta)), run2(w) + beta * fr,
                               rtol=1e-5, atol=1e-6)


def test_beta_decays_and_at_zero_the_strategy_is_darts_bitwise():
    r = relax.auxiliary_skip_relaxation(relax.softmax_relaxation(), SKIP,
                                        relax.linear_schedule(1.0, 0.0, 5))
    a = {"normal": jnp.zeros((14, 8)), "reduce": jnp.zeros((14, 8))}
    for s, beta in ((0, 1.0), (2, 0.5), (4, 0.0)):
        np.testing.assert_allclose(r.weights(None, a, s)["normal"][:, SKIP], 1 / 8 + beta)
    model = ToySupernet()
    states = []
    for strat in (dm.darts_minus(model, total_steps=4, beta_max=0.0, w_schedule=0.1),
                  darts_lib.darts(model, w_schedule=0.1)):
        state = strat.init(jax.random.key(0), TRAIN["image"])
        states.append(jax.jit(strat.step)(state, TRAIN, VAL)[0])
    for p, q in zip(jax.tree.leaves((states[0].params, states[0].alphas)),
                    jax.tree.leaves((states[1].params, states[1].alphas))):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
