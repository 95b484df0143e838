"""SNAS over the bilevel core: one single-level step on the training loss; the
architecture update does not read the validation batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import relax
from jaxnas.losses import cross_entropy
from jaxnas.strategies import snas as snas_lib
from test_darts_strategy import TRAIN, VAL, ToySupernet, _batch


def test_arch_and_weights_descend_the_training_loss_without_the_validation_batch():
    model = ToySupernet()
    strat = snas_lib.snas(model, total_steps=5, w_schedule=0.1, a_tx=optax.sgd(1.0))
    state = strat.init(jax.random.key(0), TRAIN["image"])
    step = jax.jit(strat.step)
    new, _ = step(state, TRAIN, VAL)
    other_val, _ = step(state, TRAIN, _batch(7))
    for a, b in zip(jax.tree.leaves((new.alphas, new.params)),
                    jax.tree.leaves((other_val.alphas, other_val.params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other_train, _ = step(state, _batch(7), VAL)  # the training batch does matter
    assert not np.array_equal(np.asarray(other_train.alphas["normal"]),
                              np.asarray(new.alphas["normal"]))
    # the alpha update is -1 x the gradient of the training loss of the step's soft sample
    _, k_sample = jax.random.split(state.key)

    def train_loss(alphas):
        w = relax.gumbel_softmax(k_sample, alphas, tau=1.0)  # tau_max at step 0
        logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                TRAIN["image"], w, mutable=["batch_stats"])
        return cross_entropy(logits, TRAIN["label"])

    g = jax.grad(train_loss)(state.alphas)
    for k in ("normal", "reduce"):
        np.testing.assert_allclose(np.asarray(state.alphas[k] - new.alphas[k]),
                                   np.asarray(g[k]), rtol=1e-4, atol=1e-8)
