"""Meshes and shardings: config rules, divisibility errors, sharded == single device.

The equality checks run `tests/parallel_checks.py` in a subprocess with 8 fake CPU
devices (XLA_FLAGS must be set before JAX starts; the rest of the suite keeps one
device). Each compares the search loops' own jitted functions on a one-device mesh
and on an 8-device mesh, from the same state and global batches.

Tolerances: the sharded runs differ from the single-device run only in the order
of floating-point reductions (cross-device sums of BatchNorm statistics, losses and
gradients), so float32 results agree to a few ulps of their magnitude: measured
differences are at most ~5e-7 absolute after two steps; the assertions allow 1e-5.
The population's accuracies are counts of correct predictions (equal; the division
by the count may round differently in the last place), and the evolution's choices
depend only on their order, so the chosen and visited architectures must be equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from jaxnas import config as config_lib
from jaxnas import parallel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOL = 1e-5


def _checks(*names: str, data_dir: str | None = None) -> dict[str, dict]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(
        [f for f in env.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
        + ["--xla_force_host_platform_device_count=8"])
    if data_dir:
        env["JAXNAS_DATA_DIR"] = data_dir
    proc = subprocess.run([sys.executable, os.path.join(HERE, "parallel_checks.py"),
                           *names], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()
               if line.startswith("{")]
    return {r["check"]: r for r in results}


# ----------------------------------------------------------------------------------
# Sharded == single device (8 fake CPU devices).


def _assert_darts_equal(r):
    assert r["devices"] == 8
    assert "'data': 8" in r["sharding"]  # the state is placed on the 8-device mesh
    for key, diff in r["max_abs_diff"].items():
        assert diff <= TOL, (r["check"], key, diff)
    # the sharded run is not trivially identical: it did reduce across devices
    assert max(r["max_abs_diff"].values()) > 0.0


def test_darts_first_order_step_sharded_equals_single_device():
    _assert_darts_equal(_checks("darts_first_order")["darts_first_order"])


@pytest.mark.slow  # the exact Hessian-vector product compiles for ~2 minutes here
def test_darts_exact_second_order_step_sharded_equals_single_device():
    _assert_darts_equal(_checks("darts_exact")["darts_exact"])


@pytest.mark.slow
def test_darts_finite_difference_step_sharded_equal_single():
    _assert_darts_equal(_checks("darts_fd")["darts_fd"])


def test_proxyless_two_path_chain_step_sharded_equals_single_device():
    # the pairs are drawn from the replicated key: the same on every device
    _assert_darts_equal(_checks("proxyless_chain_two_path")["proxyless_chain_two_path"])


def test_fairnas_step_with_paths_on_a_mesh_axis_equals_single_device():
    r = _checks("fairnas_shared")["fairnas_shared"]
    assert r["mesh"] == {"data": 4, "path": 2, "pop": 1}
    assert r["counts_equal"]
    for key, diff in r["max_abs_diff"].items():
        assert diff <= TOL, (key, diff)


@pytest.mark.slow
def test_fairnas_per_path_batches_sharded_equal_single_device():
    r = _checks("fairnas_per_path")["fairnas_per_path"]
    assert r["counts_equal"]
    for key, diff in r["max_abs_diff"].items():
        assert diff <= TOL, (key, diff)


def test_population_evaluation_and_evolution_sharded_equal_single(digits_data_dir):
    r = _checks("population", data_dir=digits_data_dir)["population"]
    assert r["mesh"] == {"data": 2, "path": 1, "pop": 4}
    assert r["accuracy_sharded"] == r["accuracy_single"]
    assert len(set(r["accuracy_single"])) > 1  # the paths are told apart
    assert r["best_arch_equal"] and r["history_archs_equal"]
    # the same counts; the division by the count may round differently (1 ulp)
    assert r["max_abs_diff"]["history_fitness"] <= 1e-6


# ----------------------------------------------------------------------------------
# Mesh shapes and config errors (no devices needed).


@pytest.mark.parametrize("sizes, devices, expected", [
    ({}, 8, {"data": 8, "path": 1, "pop": 1}),
    ({"data": -1, "path": 2}, 8, {"data": 4, "path": 2, "pop": 1}),
    ({"data": 2, "pop": -1}, 8, {"data": 2, "path": 1, "pop": 4}),
    ({"data": 1}, 1, {"data": 1, "path": 1, "pop": 1}),
])
def test_mesh_shape_resolves_the_rest(sizes, devices, expected):
    full = {"data": -1, "path": 1, "pop": 1, **sizes}
    assert parallel.mesh_shape(full, devices) == expected


@pytest.mark.parametrize("sizes, devices, named", [
    ({"data": 3, "path": 1, "pop": 1}, 8, "mesh.data=3"),
    ({"data": -1, "path": 3, "pop": 1}, 8, "do not divide the 8 devices"),
    ({"data": -1, "path": -1, "pop": 1}, 8, "at most one mesh axis may be -1"),
    ({"data": 0, "path": 1, "pop": 1}, 8, "config.mesh.data=0"),
])
def test_bad_mesh_shapes_are_refused_naming_the_keys(sizes, devices, named):
    with pytest.raises(config_lib.ConfigError, match=named.replace(".", r"\.")):
        parallel.mesh_shape(sizes, devices)


def test_mesh_sizes_default_to_every_device_on_data():
    assert parallel.mesh_sizes(None) == {"data": -1, "path": 1, "pop": 1}


def _fake_mesh(**shape):
    full = {"data": 1, "path": 1, "pop": 1, **shape}
    return types.SimpleNamespace(shape=full, axis_names=tuple(full))


def test_a_batch_that_does_not_split_over_the_data_axis_is_refused():
    with pytest.raises(config_lib.ConfigError) as e:
        parallel.check_divisible(_fake_mesh(data=8), {"data.batch_size": (12, "data")})
    text = str(e.value)
    assert "config.data.batch_size=12" in text and "8 devices" in text
    assert "mesh axis 'data'" in text and "multiple of 8" in text
    parallel.check_divisible(_fake_mesh(data=8), {"data.batch_size": (16, "data")})


def test_search_refuses_an_indivisible_batch_before_compiling(tmp_path,
                                                              digits_data_dir):
    env = dict(os.environ, JAXNAS_DATA_DIR=digits_data_dir,
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", "--config",
         "experiments/darts_digits.py", "--workdir", str(tmp_path / "w"),
         "--config.data.batch_size=12"], capture_output=True, text=True, env=env,
        cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert "config.data.batch_size=12" in proc.stderr
    assert "mesh axis 'data'" in proc.stderr
    assert "first step" not in proc.stderr  # nothing was compiled or run
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("key, value, allowed", [
    ("mesh.data", "0", "-1 for every device"),
    ("mesh.path", "2", "not allowed for DARTS"),
])
def test_mesh_config_values_are_validated(key, value, allowed):
    from jaxnas import search

    config = config_lib.load_config(os.path.join(ROOT, "experiments/darts_digits.py"))
    with pytest.raises(config_lib.ConfigError, match=allowed):
        if key == "mesh.path":
            with config.unlocked():
                config.mesh.path = int(value)
        else:
            config_lib.apply_overrides(config, [f"{key}={value}"])
        search.validate_config(config)


@pytest.mark.parametrize("path", ["experiments/spos_digits.py",
                                  "experiments/fairnas_digits.py",
                                  "experiments/fairnas_cifar10.py"])
def test_oneshot_configs_accept_path_and_pop_axes(path):
    from jaxnas import search

    config = config_lib.load_config(os.path.join(ROOT, path))
    config_lib.apply_overrides(config, ["mesh.data=2", "mesh.path=2", "mesh.pop=-1"])
    search.validate_config(config)


# ----------------------------------------------------------------------------------
# jax.distributed settings.


def test_distributed_settings_from_flags_and_environment():
    assert parallel.distributed_settings(environ={}) is None
    assert parallel.distributed_settings(auto=True, environ={}) == {}
    flags = parallel.distributed_settings(coordinator="10.0.0.1:1234", num_processes=4,
                                          process_id=3, environ={})
    assert flags == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                     "process_id": 3}
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": "1"}
    assert parallel.distributed_settings(environ=env) == {
        "coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
    # a flag wins over the environment
    assert parallel.distributed_settings(process_id=0, environ=env)["process_id"] == 0


def test_incomplete_distributed_settings_are_refused_naming_what_is_missing():
    with pytest.raises(config_lib.ConfigError, match="--num-processes, --process-id"):
        parallel.distributed_settings(coordinator="h:1", environ={})
    with pytest.raises(config_lib.ConfigError, match="--process-id=2"):
        parallel.distributed_settings(coordinator="h:1", num_processes=2, process_id=2,
                                      environ={})
    # with --distributed JAX detects the rest (TPU pods, SLURM, Open MPI)
    assert parallel.distributed_settings(coordinator="h:1", auto=True,
                                         environ={}) == {"coordinator_address": "h:1"}
