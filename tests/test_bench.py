"""`jaxnas bench` / `python -m jaxnas.bench`: tiny smoke runs of every suite.

Checks that each suite runs through the command line and writes JSON records with every
field and the contract names; no timing assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.bench import runner
from jaxnas import cli

TINY_DARTS = ["--channels", "2", "--layers", "1", "--nodes", "2", "--image", "8",
              "--batch", "2", "--repeats", "1"]
TINY_CHAIN = ["--space", "digits", "--batch", "2", "--repeats", "1",
              "--population-sizes", "1,2"]
# Fields beyond runner.FIELDS that a measured record has.
MEASURED = ("cpu_step_s", "min_step_s", "times_s", "lower_s", "xla_live_bytes",
            "hlo_while_loops", "rss_peak_compile_bytes", "loadavg_1m")


def _bench(command: list[str], tmp_path, *extra: str) -> tuple[list[dict], str]:
    """Runs the bench command in a subprocess; returns its JSON records and stdout."""
    out = tmp_path / "bench.jsonl"
    proc = subprocess.run([sys.executable, "-m", *command, *extra, "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in out.read_text().splitlines()], proc.stdout


def _check(records: list[dict], names: list[str], stdout: str) -> None:
    assert [r["name"] for r in records] == names
    for r in records:
        assert "error" not in r, r.get("error")
        for key in runner.FIELDS + MEASURED:
            assert key in r, (r["name"], key)
            assert r[key] is not None or key in ("loadavg_1m",), (r["name"], key)
        assert r["step_s"] > 0 and r["compile_s"] > 0 and r["peak_bytes"] > 0
        assert r["flops"] > 0 and r["flops_per_s"] > 0
        assert isinstance(r["config"], dict) and r["config"]["repeats"] == 1
        if r["name"].startswith("evolution/"):
            assert r["paths_per_s"] > 0
            assert r["config"]["population"] == int(r["name"].rsplit("=", 1)[1])
            assert r["config"]["calib_batches"] == r["config"]["val_batches"] == 2
        assert r["images_per_s"] > 0
        assert r["name"] in stdout


def test_record_names_are_the_contract():
    args = runner.parse(["--suite", "all"])
    assert runner.record_names(args) == [
        "darts/weight_step",
        "darts/arch_step/first_order", "darts/iteration/first_order",
        "darts/arch_step/darts_fd", "darts/iteration/darts_fd",
        "darts/arch_step/darts_exact", "darts/iteration/darts_exact",
        "darts/arch_step/amended", "darts/iteration/amended",
        "darts/arch_step/implicit_cg", "darts/iteration/implicit_cg",
        "oneshot/spos_step", "oneshot/fairnas_step",
        "evolution/population_eval/P=1", "evolution/population_eval/P=8",
        "evolution/population_eval/P=64"]
    args = runner.parse(["--estimators", "darts_exact", "--only", "darts/iteration"])
    assert runner.record_names(args) == ["darts/iteration/darts_exact"]
    args = runner.parse(["--suite", "formulations", "--variants", "fused"])
    assert runner.record_names(args) == ["supernet/fwd_bwd/fused"]
    args = runner.parse(["--suite", "kernels", "--only", "kernels/max_pool,kernels/first_layer/"])
    assert runner.record_names(args) == ["kernels/first_layer/slices", "kernels/first_layer/taps",
                                         "kernels/max_pool/slices",
                                         "kernels/max_pool/reduce_window"]


@pytest.mark.parametrize("flags", [["--estimators", "first_order,nope"],
                                   ["--population-sizes", "0"], ["--suite", "nope"],
                                   ["--variants", "scan,unrolled"], ["--batch", "0"]])
def test_bad_flags_exit_with_status_2(flags, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", *flags])
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_darts_suite_smoke(tmp_path):
    """Weight step, first-order iteration and exact second-order architecture step."""
    names = ["darts/weight_step", "darts/iteration/first_order",
             "darts/arch_step/darts_exact"]
    records, stdout = _bench(["jaxnas", "bench"], tmp_path, *TINY_DARTS, "--estimators",
                             "first_order,darts_exact", "--only", ",".join(names))
    _check(records, names, stdout)
    by_name = {r["name"]: r for r in records}
    assert by_name["darts/arch_step/darts_exact"]["config"]["estimator"] == "darts_exact"
    assert by_name["darts/weight_step"]["config"]["channels"] == 2


@pytest.mark.slow
def test_darts_suite_smoke_every_record(tmp_path):
    records, stdout = _bench(["jaxnas.bench"], tmp_path, *TINY_DARTS)
    _check(records, runner.record_names(runner.parse([])), stdout)


def test_oneshot_and_evolution_suites_smoke(tmp_path):
    records, stdout = _bench(["jaxnas.bench"], tmp_path, "--suite", "all", "--only",
                             "oneshot,evolution", *TINY_CHAIN)
    _check(records, ["oneshot/spos_step", "oneshot/fairnas_step",
                     "evolution/population_eval/P=1", "evolution/population_eval/P=2"],
           stdout)
    fair = records[1]
    assert fair["config"]["paths_per_step"] == 6
    assert fair["path_images_per_s"] == pytest.approx(6 * fair["images_per_s"], rel=1e-3)


@pytest.mark.slow
def test_oneshot_and_evolution_sharded_over_two_devices(tmp_path):
    records, stdout = _bench(["jaxnas.bench"], tmp_path, "--suite", "all", "--only",
                             "oneshot/spos,evolution", *TINY_CHAIN, "--devices", "2")
    _check(records, ["oneshot/spos_step", "evolution/population_eval/P=1",
                     "evolution/population_eval/P=2"], stdout)
    assert all(r["num_devices"] == 2 for r in records)


def test_formulations_suite_smoke(tmp_path, capsys):
    """`jaxnas bench --suite formulations` (the mixed-op comparison) in this process."""
    out = tmp_path / "bench.jsonl"
    code = cli.main(["bench", "--suite", "formulations", "--variants", "scan",
                     *TINY_DARTS, "--json", str(out)])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    _check(records, ["supernet/fwd_bwd/scan"], capsys.readouterr().out)


def test_kernels_suite_smoke(tmp_path):
    """`jaxnas bench --suite kernels`: each depthwise/pool kernel in two implementations."""
    records, stdout = _bench(["jaxnas.bench"], tmp_path, "--suite", "kernels", "--channels",
                             "2", "--image", "6", "--batch", "2", "--repeats", "1",
                             "--kernel-impls", "slices,lax", "--only",
                             "kernels/first_layer_s2,kernels/max_pool")
    _check(records, ["kernels/first_layer_s2/slices", "kernels/first_layer_s2/lax",
                     "kernels/max_pool/slices", "kernels/max_pool/reduce_window"], stdout)
    assert records[0]["config"]["impl"] == "slices"


@pytest.mark.parametrize("estimator", [
    "first_order",
    *[pytest.param(e, marks=pytest.mark.slow)
      for e in ("darts_fd", "darts_exact", "amended", "implicit_cg")]])
def test_parts_compose_to_the_strategy_step(estimator):
    """The strategy's `parts` (arch step, then weight step), which the benchmark times
    apart, give the strategy's step bit for bit (run op by op, without jit, so no
    fusion changes the rounding), metrics included."""
    from types import SimpleNamespace

    from jaxnas.bench import common
    from jaxnas.bench import darts as bench_darts

    args = SimpleNamespace(channels=2, num_classes=10, layers=1, nodes=2,
                           mixed_op="scan", impl="auto")
    model = bench_darts.build_model(args)
    train = common.synthetic_batch(0, 2, 8, 3, 10)
    val = common.synthetic_batch(1, 2, 8, 3, 10)
    strategy = bench_darts.strategy(model, estimator)
    state = strategy.init(jax.random.key(0), train["image"])
    want, want_metrics = strategy.step(state, train, val)
    arch_step, weight_step = strategy.parts["arch_step"], strategy.parts["weight_step"]
    mid, arch_metrics = arch_step(state, train, val)
    assert int(mid.step) == int(state.step)  # the arch half leaves the weights alone
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(mid.params)[0]),
                                  np.asarray(jax.tree.leaves(state.params)[0]))
    got, w_metrics = weight_step(mid, train)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    def host(x):  # the bilevel state's PRNG key compares by its bits
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(host(a), host(b))
    assert not np.allclose(np.asarray(want.alphas["normal"]),
                           np.asarray(state.alphas["normal"]))
    assert set(want_metrics) == set(arch_metrics) | set(w_metrics)
    for k, v in {**arch_metrics, **w_metrics}.items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(want_metrics[k]))
    assert jnp.isfinite(w_metrics["train_loss"])


def test_a_failing_call_keeps_the_compile_time_and_says_why():
    """A step that fails when run (say, out of memory) still gives its compile time."""
    from jaxnas.bench.measure import measure_step

    def fail(x):
        raise RuntimeError("no memory left")

    def fn(x):
        return jax.pure_callback(fail, jax.ShapeDtypeStruct((), jnp.float32), x)

    record = measure_step(fn, (jnp.float32(1.0),), repeats=1)
    assert record["error"] and record["step_s"] is None and record["compile_s"] > 0
    assert record["xla_live_bytes"] is not None


def test_compile_probe_parses_compiler_options_and_remat_flag():
    from jaxnas.bench import compile_probe

    assert compile_probe._parse_options("") == {}
    assert compile_probe._parse_options(
        "xla_llvm_disable_expensive_passes=true,xla_backend_optimization_level=1") == {
        "xla_llvm_disable_expensive_passes": True, "xla_backend_optimization_level": 1}
    assert runner.parse(["--remat"]).remat and not runner.parse([]).remat
