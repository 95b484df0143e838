"""Retraining (`jaxnas train`): config checks, a step by hand, drop-path, end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from jaxnas import config as C
from jaxnas import train

CONFIG = "experiments/train_digits.py"
# Tiny shapes keep compilation short; the persistent XLA cache of conftest.py lets later
# runs of the same network reuse the first run's compilation.
SMALL = ["--config.model.channels=4", "--config.model.layers=3",
         "--config.data.batch_size=16", "--config.data.eval_batch_size=100",
         "--config.log_every=1", "--config.eval_every=0",
         "--config.checkpoint_every=2"]
# A one-node cell: the step and drop-path checks need only a few ops (fast compiles);
# sep_conv, max_pool and the stride-2 skip (FactorizedReduce) all take drop-path.
TINY_STR = ("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1)], "
            "normal_concat=[2], reduce=[('max_pool_3x3', 0), ('skip_connect', 1)], "
            "reduce_concat=[2])")
RESULT_KEYS = {"genotype", "genotype_str", "dataset", "num_params",
               "num_params_with_auxiliary", "test_accuracy", "test_error", "test_loss",
               "steps", "epochs", "total_steps"}


# ----------------------------------------------------------------------------------
# Config validation (no JAX).


def test_shipped_configs_are_valid():
    for path in (CONFIG, "experiments/train_darts_cifar10.py"):
        train.validate_config(C.load_config(path))
    paper = C.load_config("experiments/train_darts_cifar10.py")
    assert (paper.model.channels, paper.model.layers, paper.epochs,
            paper.data.batch_size, paper.data.cutout) == (36, 20, 600, 96, 16)
    assert (paper.model.auxiliary_weight, paper.model.drop_path_prob,
            paper.optim.lr) == (0.4, 0.2, 0.025)


@pytest.mark.parametrize("override, message", [
    ("epochs=0", r"config.epochs=0.*positive integer"),
    ("num_steps=-2", r"config.num_steps=-2.*-1"),
    ("data.batch_size=0", r"config.data.batch_size=0.*positive integer"),
    ("data.cutout=-1", r"config.data.cutout=-1.*non-negative integer"),
    ("model.layers=2", r"config.model.layers=2.*>= 3"),
    ("model.channels=0", r"config.model.channels=0.*positive integer"),
    ("model.drop_path_prob=1.0", r"config.model.drop_path_prob=1.0.*\[0.0, 1.0\)"),
    ("model.auxiliary_weight=-0.4",
     r"config.model.auxiliary_weight=-0.4.*non-negative"),
    ("optim.lr=nan", r"config.optim.lr=nan.*positive number"),
    ("optim.momentum=1.0", r"config.optim.momentum=1.0.*\[0.0, 1.0\)"),
    ("optim.grad_clip=0", r"config.optim.grad_clip=0.0.*positive number"),
    ("optim.lr_min=0.5", r"config.optim.lr_min=0.5.*at most optim.lr=0.025"),
    ("data.dataset=", r"config.data.dataset=''.*digits"),
])
def test_bad_values_rejected_with_key_value_and_allowed(override, message):
    cfg = C.load_config(CONFIG)
    C.apply_overrides(cfg, [override])
    with pytest.raises(C.ConfigError, match=message):
        train.validate_config(cfg)


def test_search_config_and_missing_keys_are_refused():
    with pytest.raises(C.ConfigError, match=r"'darts.estimator'.*not retraining keys"):
        train.validate_config(C.load_config("experiments/darts_digits.py"))
    cfg = C.load_config(CONFIG)
    cfg.unlock()
    del cfg.optim["grad_clip"]
    with pytest.raises(C.ConfigError, match=r"'optim.grad_clip' is missing"):
        train.validate_config(cfg)


NB201_CONFIG = "experiments/train_nb201_digits.py"
NB201_BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
              "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")


@pytest.mark.parametrize("override, message", [
    ("model.channels=0", r"config.model.channels=0.*positive integer"),
    ("model.layers=0", r"config.model.layers=0.*positive integer.*cells per stage"),
    ("model.channels=-4", r"config.model.channels=-4.*positive integer"),
])
def test_nb201_config_rules(override, message):
    cfg = C.load_config(NB201_CONFIG)
    train.validate_config(cfg, "nb201")
    assert (cfg.model.channels, cfg.model.layers) == (8, 1)
    C.apply_overrides(cfg, [override])
    with pytest.raises(C.ConfigError, match=message):
        train.validate_config(cfg, "nb201")


def test_nb201_genotype_with_a_darts_config_names_the_nb201_example():
    # a DARTS config's auxiliary/drop-path keys are foreign to an NB201 network
    with pytest.raises(C.ConfigError, match=r"darts retraining configs.*nb201.*"
                       r"train_nb201_digits\.py"):
        train.validate_config(C.load_config(CONFIG), "nb201")


def test_nb201_train_end_to_end(tmp_path, digits_data_dir, monkeypatch):
    from jaxnas import cli, spaces

    monkeypatch.setenv("JAXNAS_DATA_DIR", digits_data_dir)
    workdir = tmp_path / "nb201"
    assert cli.main(["train", "--genotype", NB201_BEST, "--config", NB201_CONFIG,
                     "--workdir", str(workdir), "--config.model.channels=4",
                     "--config.data.batch_size=16", "--config.eval_every=0",
                     "--config.num_steps=2", "--config.log_every=1"]) == 0
    result = json.load(open(workdir / "result.json"))
    arch = spaces.from_json(result["genotype"])
    assert spaces.space_of(arch).name == "nb201" and arch.to_str() == NB201_BEST
    assert result["steps"] == 2 and 0 <= result["test_accuracy"] <= 1
    # one input channel here, three in the closed form: 2 * 9 * C fewer stem weights
    want = spaces.get("nb201").num_params(arch, channels=4, layers=1) - 2 * 9 * 4
    assert result["num_params"] == want


def test_cli_bad_config_fails_fast_without_jax(tmp_path):
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "train", "--genotype", "DARTS_V2", "--config",
         CONFIG, "--workdir", str(tmp_path / "w"), "--config.model.drop_path_prob=2"],
        capture_output=True, text=True, timeout=60)
    elapsed = time.time() - t0
    assert proc.returncode == 2
    assert "config.model.drop_path_prob=2.0 is not allowed" in proc.stderr
    assert not (tmp_path / "w").exists()
    assert elapsed < 10, elapsed  # generous for a loaded 2-core machine; ~0.3 s
    code = ("import sys; from jaxnas import config as C, train; "
            f"train.validate_config(C.load_config('{CONFIG}')); "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------
# The pure step, against an optax-free computation.


def test_two_train_steps_match_a_hand_computation():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxnas.networks.darts_eval import NetworkCIFAR
    from jaxnas.runners import train as runner
    from jaxnas.spaces import genotypes

    model = NetworkCIFAR(C=4, num_classes=10, layers=3, auxiliary=True,
                         genotype=genotypes.from_str(TINY_STR))
    lr, mom, wd, clip, aux_w, p_max = 0.1, 0.9, 3e-4, 0.5, 0.4, 0.3
    # One step an epoch over 2 epochs: step 0 has lr 0.1 and drop-path 0, step 1 has
    # lr 0.1 * (1 + cos(pi / 2)) / 2 = 0.05 and drop-path 0.3 * 1 / 2 = 0.15.
    tr = runner.trainer(model, epochs=2, steps_per_epoch=1, lr=lr, lr_min=0.0,
                        momentum=mom, weight_decay=wd, grad_clip=clip,
                        auxiliary_weight=aux_w, drop_path_prob=p_max)
    rng = np.random.default_rng(0)
    batches = [{"image": jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32),
                "label": jnp.asarray(rng.integers(0, 10, 8), jnp.int32)}
               for _ in range(2)]
    state0 = jax.jit(tr.init)(jax.random.key(1, impl=runner.KEY_IMPL),
                              batches[0]["image"][:1])
    step = jax.jit(tr.step)
    state1, m0 = step(state0, batches[0])
    state2, m1 = step(state1, batches[1])

    def ce(logits, labels):  # cross entropy written out
        logp = logits - jax.scipy.special.logsumexp(logits, -1, keepdims=True)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], -1))

    @jax.jit
    def grad_and_stats(params, stats, batch, p, key):
        def loss(params):
            (logits, aux), upd = model.apply(
                {"params": params, "batch_stats": stats}, batch["image"], train=True,
                drop_path_prob=p, rngs={"dropout": key}, mutable=["batch_stats"])
            return (ce(logits, batch["label"]) + aux_w * ce(aux, batch["label"]),
                    upd["batch_stats"])
        return jax.value_and_grad(loss, has_aux=True)(params)

    # Clipped torch SGD (coupled weight decay, momentum) in float64 numpy.
    to_np = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), tree)  # noqa
    leaves = jax.tree_util.tree_leaves
    params, stats = state0.params, state0.batch_stats
    w = to_np(params)
    buf = None
    for s, (batch, p, lr_s) in enumerate(zip(batches, (0.0, 0.15), (lr, lr / 2))):
        key = jax.random.fold_in(state0.key, s)  # the documented per-step key
        (loss, stats), g = grad_and_stats(params, stats, batch, p, key)
        g = to_np(g)
        norm = math.sqrt(sum(np.sum(x ** 2) for x in leaves(g)))
        assert norm > clip  # the clip is active
        d = jax.tree.map(lambda g_, w_: g_ * (clip / norm) + wd * w_, g, w)
        buf = d if buf is None else jax.tree.map(lambda b_, d_: mom * b_ + d_, buf, d)
        w = jax.tree.map(lambda w_, b_: w_ - lr_s * b_, w, buf)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w)
        metrics = (m0, m1)[s]
        np.testing.assert_allclose(float(metrics["train_loss"]), float(loss),
                                   rtol=1e-5)
        np.testing.assert_allclose(float(metrics["lr"]), lr_s, rtol=1e-6)
        np.testing.assert_allclose(float(metrics["drop_path_prob"]), p, rtol=1e-6)
        np.testing.assert_allclose(float(metrics["grad_norm"]), norm, rtol=1e-4)
    for got, want in zip(leaves(state2.params), leaves(w)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
    for got, want in zip(leaves(state2.batch_stats), leaves(stats)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                                   atol=1e-6)
    assert int(state2.step) == 2
    # The drop-path of step 1 really acted: without it the loss is different.
    (loss_no_drop, _), _ = grad_and_stats(state1.params, state1.batch_stats,
                                          batches[1], 0.0,
                                          jax.random.fold_in(state0.key, 1))
    assert abs(float(loss_no_drop) - float(m1["train_loss"])) > 1e-4


def test_drop_path_is_identity_at_zero_and_in_eval():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxnas.networks.darts_eval import NetworkCIFAR
    from jaxnas.runners import train as runner
    from jaxnas.spaces import genotypes

    model = NetworkCIFAR(C=4, num_classes=10, layers=3, auxiliary=False,
                         genotype=genotypes.from_str(TINY_STR))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 1)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(1, impl=runner.KEY_IMPL), x)
    key = {"dropout": jax.random.key(2, impl=runner.KEY_IMPL)}

    @jax.jit
    def train_logits(p):  # p traced: drop-path is in the graph
        (logits, _), _ = model.apply(variables, x, train=True, drop_path_prob=p,
                                     rngs=key, mutable=["batch_stats"])
        return logits

    @jax.jit
    def plain_train_logits():  # a static 0: no drop-path at all
        (logits, _), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return logits

    eval_logits = jax.jit(lambda p: model.apply(variables, x, train=False,
                                                drop_path_prob=p)[0])
    plain = plain_train_logits()
    # Equal up to float reordering: the two programs are fused differently.
    np.testing.assert_allclose(train_logits(0.0), plain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(train_logits(0.5), plain, atol=1e-3)
    np.testing.assert_array_equal(eval_logits(0.5), eval_logits(0.0))
    # The schedule: DARTS' drop_path_prob * epoch / epochs.
    schedule = runner.drop_path_schedule(0.2, epochs=4, steps_per_epoch=3)
    got = [float(schedule(jnp.int32(s))) for s in (0, 2, 3, 7, 11, 12)]
    np.testing.assert_allclose(got, [0.0, 0.0, 0.05, 0.1, 0.15, 0.2], rtol=1e-6)


# ----------------------------------------------------------------------------------
# End to end through the command line.


def _train(workdir, data_dir, genotype="DARTS_V2", *extra, check=True):
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "train", "--genotype", genotype, "--config",
         CONFIG, "--workdir", str(workdir), *SMALL, *extra], capture_output=True,
        text=True, env=env, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, digits_data_dir):
    workdir = tmp_path_factory.mktemp("train")
    _train(workdir, digits_data_dir, "DARTS_V2", "--config.num_steps=3")
    return workdir


def test_train_writes_results(full_run):
    from jaxnas.networks import darts_eval
    from jaxnas.spaces import genotypes

    assert {"config.json", "metrics.jsonl", "result.json", "checkpoints"} <= set(
        os.listdir(full_run))
    result = json.load(open(full_run / "result.json"))
    assert set(result) == RESULT_KEYS
    assert result["steps"] == 3 and result["total_steps"] == 10 * (1500 // 16)
    assert genotypes.from_json(result["genotype"]) == genotypes.DARTS_V2
    assert genotypes.from_str(result["genotype_str"]) == genotypes.DARTS_V2
    assert math.isfinite(result["test_accuracy"]) and 0 <= result["test_accuracy"] <= 1
    assert result["test_error"] == pytest.approx(1 - result["test_accuracy"])
    # The count from shapes: 3 input channels there, 1 here (27 vs 9 stem weights).
    expected = darts_eval.count_parameters(genotypes.DARTS_V2, 4, 3, 10) - 2 * 9 * 12
    assert result["num_params"] == expected
    assert result["num_params_with_auxiliary"] > result["num_params"]
    records = [json.loads(line) for line in open(full_run / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert "test_accuracy" in records[-1] and "test_accuracy" not in records[0]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert [r["lr"] for r in records] == [pytest.approx(0.025)] * 3
    assert json.load(open(full_run / "config.json"))["model"]["channels"] == 4


def test_genotype_as_json_file_and_as_string(full_run, tmp_path, digits_data_dir,
                                            monkeypatch):
    from jaxnas import cli
    from jaxnas.spaces import genotypes

    monkeypatch.setenv("JAXNAS_DATA_DIR", digits_data_dir)
    tiny = genotypes.from_str(TINY_STR)
    path = tmp_path / "genotype.json"  # shaped like a search's genotype.json
    path.write_text(json.dumps({"genotype": genotypes.to_json(tiny),
                                "genotype_str": TINY_STR}))
    # The literal is the network of `full_run`, whose compilation is cached.
    for spec, want, extra in (
            (str(path), tiny, ["--config.model.auxiliary=false"]),
            (genotypes.to_str(genotypes.DARTS_V2), genotypes.DARTS_V2, [])):
        workdir = tmp_path / f"w{len(spec)}"
        assert cli.main(["train", "--genotype", spec, "--config", CONFIG,
                         "--workdir", str(workdir), *SMALL, *extra,
                         "--config.num_steps=1"]) == 0
        result = json.load(open(workdir / "result.json"))
        assert genotypes.from_json(result["genotype"]) == want
        assert result["steps"] == 1


@pytest.mark.slow
def test_interrupted_training_resumes_bitwise_and_refuses_another_run(
        full_run, tmp_path, digits_data_dir):
    _train(tmp_path, digits_data_dir, "DARTS_V2", "--config.num_steps=2")
    proc = _train(tmp_path, digits_data_dir, "DARTS_V2", "--config.num_steps=3")
    assert "resumed from the checkpoint at step 2" in proc.stderr
    a = [json.loads(line) for line in open(full_run / "metrics.jsonl")]
    b = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    # The same training metrics, bitwise (b also holds the test pass ending run 1).
    train_keys = [k for k in a[0] if k != "time"]
    assert [[r[k] for k in train_keys] for r in a] == [[r[k] for k in train_keys]
                                                       for r in b]
    ra, rb = (json.load(open(d / "result.json")) for d in (full_run, tmp_path))
    assert ra == rb  # bitwise: the same floats printed the same way
    other = _train(tmp_path, digits_data_dir, "DARTS_V1", "--config.num_steps=4",
                   check=False)
    assert other.returncode == 2 and "another genotype" in other.stderr
    config = _train(tmp_path, digits_data_dir, "DARTS_V2", "--config.num_steps=4",
                    "--config.optim.lr=0.05", check=False)
    assert config.returncode == 2
    assert "optim.lr (checkpoint 0.025, now 0.05)" in config.stderr
    assert json.load(open(tmp_path / "config.json"))["optim"]["lr"] == 0.025
