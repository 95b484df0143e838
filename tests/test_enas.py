"""ENAS on the chain supernet: the trained path is the controller's sample, and the
controller's update is REINFORCE on the sampled paths' validation accuracy with the
updated shared weights."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import config as config_lib
from jaxnas import search
from jaxnas.errors import ConfigError
from jaxnas.losses import accuracy
from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import reinforce
from jaxnas.strategies.enas import enas
from jaxnas.supernet import chain as sn

SPACE = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                             strides=(1, 2), head_channels=8, in_channels=1)


def test_enas_trains_the_sampled_path_and_rewards_validation_accuracy():
    model = sn.ChainSupernet(SPACE, 3)
    strategy = enas(model, controller="factorised", controller_batch=4,
                    controller_lr=0.1, learning_rate=0.5)
    k = jax.random.split(jax.random.key(0), 4)
    train = {"image": jax.random.normal(k[0], (8, 8, 8, 1)),
             "label": jax.random.randint(k[1], (8,), 0, 3)}
    val = {"image": jax.random.normal(k[2], (64, 8, 8, 1)),
           "label": jax.random.randint(k[3], (64,), 0, 3)}
    state0 = jax.jit(strategy.init)(jax.random.key(1), train["image"][:1])
    target = jnp.array([2, 5])
    # a policy that samples `target` with probability ~1: the trained path is it
    sure = state0.replace(controller=state0.controller.replace(
        logits=50.0 * jax.nn.one_hot(target, 6)))
    step = jax.jit(strategy.step)
    sure1, _ = step(sure, train, val)
    np.testing.assert_array_equal(np.asarray(sure1.counts),
                                  np.asarray(jax.nn.one_hot(target, 6, dtype=jnp.int32)))
    np.testing.assert_array_equal(np.asarray(strategy.derive(sure1)), np.asarray(target))

    # the controller's update, recomputed: the same sampled paths, each scored on the
    # validation batch with the updated weights, then reinforce.tell (after a few
    # steps, so that the paths' accuracies differ and the update is not zero)
    for _ in range(6):
        state0, _ = step(state0, train, val)
    state1, metrics = step(state0, train, val)
    _, k_ask = jax.random.split(state0.key)
    paths, _ = reinforce.ask(k_ask, state0.controller)

    @jax.jit
    def expected(state1):
        def acc(path):
            logits, _ = model.apply({"params": state1.params,
                                     "batch_stats": state1.batch_stats}, val["image"],
                                    path, train=True, mutable=["batch_stats"])
            return accuracy(logits, val["label"])
        r = jax.vmap(acc)(paths)
        return r, reinforce.tell(state0.controller, paths, r).logits

    r, logits = expected(state1)
    np.testing.assert_allclose(float(metrics["reward_mean"]), float(jnp.mean(r)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state1.controller.logits), np.asarray(logits),
                               rtol=1e-5, atol=1e-7)
    assert np.ptp(np.asarray(r)) > 0, r
    assert int(state1.counts.sum()) == 7 * SPACE.num_layers
    assert not np.allclose(np.asarray(state1.controller.logits),
                           np.asarray(state0.controller.logits))


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "experiments", "enas_digits.py")


def _config(*overrides):
    cfg = config_lib.load_config(EXAMPLE)
    config_lib.apply_overrides(cfg, list(overrides))
    return cfg


def test_bad_enas_configs_refused_before_any_work():
    for override, match in (("enas.controller=rnn", "config.enas.controller='rnn'"),
                            ("enas.baseline_decay=1.0", "config.enas.baseline_decay"),
                            ("enas.controller_batch=0", "config.enas.controller_batch")):
        with pytest.raises(ConfigError, match=match):
            search.validate_config(_config(override))


@pytest.mark.slow
def test_tiny_enas_search_end_to_end(tmp_path, digits_data_dir):
    cfg = _config("model.stem_channels=4", "model.widths=(4,6)", "model.depths=(1,1)",
                  "model.strides=(1,2)", "model.head_channels=8", "num_steps=4",
                  "eval_every=2", "checkpoint_every=2", "enas.controller_batch=2",
                  f"data.data_dir={digits_data_dir}")
    results = search.run(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "genotype.json").read_text())
    assert saved["genotype"] == results["genotype"] and saved["steps"] == 4
    assert np.asarray(saved["counts"]).sum() == 4 * 2  # one path a step, 2 layers
    assert 0 < saved["path_probability"] <= 1
