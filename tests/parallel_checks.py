"""Sharded == single-device checks, run in a subprocess with fake CPU devices.

Usage: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python
tests/parallel_checks.py CHECK...`` with CHECK in `CHECKS`; prints one JSON line
per check: ``{"check": name, "max_abs_diff": {...}, ...}``.

Each check runs the search loops' own jitted functions (`runners.darts.
step_function`, `runners.oneshot.step_function` / `population_functions`) on a
one-device mesh and on a mesh over all 8 devices, from the same state and the same
global batches, and reports the largest differences. Tiny shapes keep the compiles
short. (Not collected by pytest: `tests/test_parallel.py` runs it.)
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from jaxnas import parallel  # noqa: E402


def _mesh(**sizes):
    config = ml_collections.ConfigDict({"mesh": sizes})
    return parallel.make_mesh(config)


def _one_device_mesh():
    return parallel.make_mesh(None, devices=jax.devices()[:1])


def _max_diff(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(
        np.asarray(x, np.float64) - np.asarray(y, np.float64)))) if np.size(x) else 0.0,
        parallel.host(a), parallel.host(b))
    return max(jax.tree.leaves(diffs) or [0.0])


def _max_rel(a, b) -> float:
    """max |a - b| over the whole tree / max |a| over the whole tree."""
    scale = max(float(np.max(np.abs(np.asarray(x, np.float64)))) if np.size(x) else 0.0
                for x in jax.tree.leaves(parallel.host(a)))
    return _max_diff(a, b) / (scale + 1e-30)


def _batches(n, b, seed, shape=(8, 8, 1)):
    rng = np.random.default_rng(seed)
    return [{"image": rng.standard_normal((b,) + shape).astype(np.float32),
             "label": rng.integers(0, 10, (b,)).astype(np.int32)} for _ in range(n)]


def _to(mesh, tree):
    return parallel.put(parallel.host(tree), parallel.replicated(mesh))


# ----------------------------------------------------------------------------------


def darts(estimator: str) -> dict:
    from experiments import darts_digits

    config = darts_digits.get_config()
    config.model.channels = 4
    config.model.layers = 3
    config.model.steps = 1          # 2 mixed edges a cell: every op, short compiles
    config.model.multiplier = 1
    config.model.impl = "lax"       # grouped convolutions: the fewest ops to compile
    config.darts.estimator = estimator
    config.darts.warmup_epochs = 0  # every step updates the alphas
    return _bilevel(config, f"darts_{estimator}")


def proxyless_chain_two_path() -> dict:
    """ProxylessNAS' two sampled paths on a tiny chain, with the parameter cost."""
    from experiments import proxyless_chain_digits

    config = proxyless_chain_digits.get_config()
    m = config.model
    m.stem_channels, m.widths, m.depths = 4, (4, 6), (1, 1)
    m.strides, m.head_channels = (1, 2), 8
    config.darts.warmup_epochs = 0
    return _bilevel(config, "proxyless_chain_two_path")


def _bilevel(config, check: str) -> dict:
    from jaxnas.runners import darts as runner

    b = 16
    _, strategy = runner.build(config, 10, steps_per_epoch=10, image_size=8)
    state0 = jax.jit(strategy.init)(jax.random.key(0), jnp.zeros((b, 8, 8, 1)))
    train, val = _batches(2, b, 1), _batches(2, b, 2)
    out = {}
    for name, mesh in (("single", _one_device_mesh()), ("sharded", _mesh(data=8))):
        runner.check_mesh(ml_collections.ConfigDict(
            {"data": {"batch_size": b}}), mesh)
        step = runner.step_function(strategy, mesh)
        sharding = parallel.batch_sharding(mesh)
        feed = lambda x: parallel.global_batch(  # noqa: E731
            x, sharding, parallel.scale_axis(0, 1))
        state = _to(mesh, state0)
        metrics = []
        for t, v in zip(train, val):
            state, m = step(state, feed(t), feed(v))
            metrics.append(parallel.host(m))
        out[name] = (state, metrics, [str(s.sharding) for s in
                                      jax.tree.leaves(state.alphas)][:1])
    (s1, m1, _), (s8, m8, sh) = out["single"], out["sharded"]
    return {"check": check, "devices": int(jax.device_count()),
            "sharding": sh[0],
            "max_abs_diff": {"alphas": _max_diff(s1.alphas, s8.alphas),
                             "params": _max_diff(s1.params, s8.params),
                             "batch_stats": _max_diff(s1.batch_stats, s8.batch_stats),
                             "metrics": _max_diff(m1, m8)},
            "max_rel_diff": {"alphas": _max_rel(s1.alphas, s8.alphas),
                             "params": _max_rel(s1.params, s8.params),
                             "metrics": _max_rel(m1, m8)}}


def _oneshot_config(method="fairnas"):
    from experiments import fairnas_digits

    config = fairnas_digits.get_config()
    config.method = method
    config.model.stem_channels = 4
    config.model.widths = (4, 8)
    config.model.depths = (1, 1)
    config.model.strides = (1, 2)
    config.model.head_channels = 8
    config.evolution.population_size = 8
    config.evolution.sample_size = 2
    config.evolution.num_cycles = 8
    config.evolution.batch_size = 4
    return config


def fairnas(per_path: bool) -> dict:
    from jaxnas.runners import oneshot as runner

    config = _oneshot_config()
    b = 16
    _, _, strategy = runner.build(config, 10, 1, total_steps=100)
    state0 = jax.jit(strategy.init)(jax.random.key(0), jnp.zeros((b, 8, 8, 1)))
    m = 6
    if per_path:
        batches = [{k: np.stack([p[k] for p in parts]) for k in parts[0]}
                   for parts in (_batches(m, b, 10), _batches(m, b, 11))]
        sharded = _mesh(data=4, path=2, pop=1)
    else:
        batches = _batches(2, b, 3)
        sharded = _mesh(data=4, path=2, pop=1)
    out = {}
    for name, mesh in (("single", _one_device_mesh()), ("sharded", sharded)):
        config.mesh = ml_collections.ConfigDict(dict(mesh.shape))
        runner.check_mesh(config, mesh)
        fn = runner.step_function(strategy, mesh, fair=True, per_path=per_path,
                                  batch_size=b)
        state = _to(mesh, state0)
        metrics = []
        for batch in batches:
            state, mm = fn.step(state, fn.feed(batch))
            metrics.append(parallel.host(mm))
        out[name] = (state, metrics)
    (s1, m1), (s8, m8) = out["single"], out["sharded"]
    return {"check": f"fairnas_{'per_path' if per_path else 'shared'}",
            "mesh": dict(sharded.shape),
            "counts_equal": bool(np.array_equal(parallel.host(s1.counts),
                                                parallel.host(s8.counts))),
            "max_abs_diff": {"params": _max_diff(s1.params, s8.params),
                             "batch_stats": _max_diff(s1.batch_stats, s8.batch_stats),
                             "opt_state": _max_diff(s1.opt_state, s8.opt_state),
                             "metrics": _max_diff(m1, m8)},
            "max_rel_diff": {"params": _max_rel(s1.params, s8.params),
                             "metrics": _max_rel(m1, m8)}}


def population() -> dict:
    from jaxnas import data as data_lib
    from jaxnas.runners import oneshot as runner

    config = _oneshot_config()
    b, ev = 16, 32
    space, model, strategy = runner.build(config, 10, 1, total_steps=100)
    state = jax.jit(strategy.init)(jax.random.key(0), jnp.zeros((b, 8, 8, 1)))
    # real digits (JAXNAS_DATA_DIR) and a few training steps, so that the paths'
    # accuracies differ and the evolution's choices depend on them
    train = data_lib.load_split("digits", "train")
    mean, std = data_lib.DATASET_STATS[data_lib.DIGITS]
    it = data_lib.BatchIterator(train.images[:400], train.labels[:400], batch_size=b,
                                mean=mean, std=std, seed=0, process_index=0,
                                process_count=1)
    step = jax.jit(strategy.step)
    for _ in range(8):
        state, _ = step(state, next(it))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    split = data_lib.ArraySplit(train.images[400:480], train.labels[400:480])
    calib_local = np.stack([next(it)["image"] for _ in range(2)])
    val_local = runner.stack_eval(split, ev, mean, std)  # 3 batches, the last padded
    paths = np.asarray(jax.random.randint(jax.random.key(3), (8, space.num_layers), 0,
                                          6, jnp.int32))
    settings = runner.evolution_settings(config)
    out = {}
    sharded = _mesh(data=2, path=1, pop=4)
    for name, mesh in (("single", _one_device_mesh()), ("sharded", sharded)):
        fns = runner.population_functions(
            model, space, 10, settings, mesh,
            lambda: jax.random.split(jax.random.key(0), 3)[2])
        calib = runner._stacked(calib_local, fns.calib_sharding, 1)
        val = runner._stacked(val_local, fns.eval_sharding, 1)
        v = _to(mesh, variables)
        acc = parallel.host(fns.accuracy(v, _to(mesh, paths), calib, val))
        result = parallel.host(fns.evolve(v, calib, val))
        out[name] = (acc, result)
    (a1, r1), (a8, r8) = out["single"], out["sharded"]
    return {"check": "population", "mesh": dict(sharded.shape),
            "accuracy_single": np.asarray(a1).tolist(),
            "accuracy_sharded": np.asarray(a8).tolist(),
            "best_arch_equal": bool(np.array_equal(r1.best_arch, r8.best_arch)),
            "history_archs_equal": bool(np.array_equal(r1.history.archs,
                                                       r8.history.archs)),
            "max_abs_diff": {"accuracy": _max_diff(a1, a8),
                             "history_fitness": _max_diff(r1.history.fitness,
                                                          r8.history.fitness)}}


CHECKS = {
    "darts_first_order": lambda: darts("first_order"),
    "darts_exact": lambda: darts("darts_exact"),
    "darts_fd": lambda: darts("darts_fd"),
    "fairnas_shared": lambda: fairnas(False),
    "fairnas_per_path": lambda: fairnas(True),
    "population": population,
    "proxyless_chain_two_path": proxyless_chain_two_path,
}


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(json.dumps({**CHECKS[name](), "check": name}), flush=True)
