"""Tabular NB201 look-ups (`jaxnas.tabular`): the table file, queries, the jitted
fitness against evolution and random search, and the converter's core."""

from __future__ import annotations

import importlib.util
import itertools

import jax
import numpy as np
import pytest

from jaxnas import spaces, tabular
from jaxnas.spaces import nb201
from jaxnas.strategies import evolution

EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|"
           "nor_conv_3x3~1|skip_connect~2|")
ALL_PATHS = np.array(list(itertools.product(range(5), repeat=6)), np.int32)


def _score(paths):
    """A made-up accuracy with one maximum: every edge nor_conv_3x3 (op 3)."""
    paths = np.asarray(paths)
    return 50.0 + 7.0 * (paths == 3).sum(-1) + 0.5 * (paths == 2).sum(-1) \
        - 0.01 * paths[..., 0]


def _full_table():
    return tabular.Table({"cifar10/ori-test": _score(ALL_PATHS),
                          "cifar10-valid/x-valid": _score(ALL_PATHS) - 1.0},
                         {"source": "test"})


def test_table_file_round_trip_and_queries(tmp_path):
    records = {EXAMPLE: {"cifar10/ori-test": 93.5, "cifar100/x-test": 70.25},
               "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|":
                   {"cifar10/ori-test": 10.0}}
    table = tabular.Table.from_records(records, {"source": "hand"})
    path = table.save(str(tmp_path / "t.npz"))
    loaded = tabular.Table.load(path)
    assert loaded.names == ("cifar10/ori-test", "cifar100/x-test")
    assert loaded.meta == {"source": "hand"}
    assert loaded.query(EXAMPLE, "cifar10/ori-test") == 93.5
    assert loaded.query(EXAMPLE, "cifar10/test") == 93.5  # the NB201 API's name
    assert loaded.query(nb201.from_str(EXAMPLE), "cifar100/test") == 70.25
    assert loaded.query(0, "cifar10/ori-test") == 10.0  # all-none is index 0
    assert np.isnan(loaded.query(0, "cifar100/x-test"))
    assert np.isnan(loaded.query(nb201.from_str(EXAMPLE).index + 1, "cifar10/test"))
    assert np.sum(~np.isnan(loaded.values("cifar10/ori-test"))) == 2
    arch, value = loaded.best("cifar10/ori-test")
    assert nb201.to_str(arch) == EXAMPLE and value == 93.5
    with pytest.raises(ValueError, match="no metric 'imagenet'.*cifar10/ori-test"):
        loaded.query(EXAMPLE, "imagenet")
    with pytest.raises(ValueError, match="at position 1 expected the op"):
        loaded.query("|conv~0|+", "cifar10/test")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a jaxnas NB201 table"):
        tabular.Table.load(str(tmp_path / "other.npz"))


def test_jitted_fitness_is_the_table_entry_of_each_path():
    table = _full_table()
    fitness = jax.jit(table.fitness_fn("cifar10/test"))
    rng = np.random.default_rng(0)
    paths = rng.integers(0, 5, (257, 6)).astype(np.int32)
    got = np.asarray(fitness(paths))
    # independent truth: the arch string of each path, looked up by string
    strings = [nb201.to_str(nb201.NB201Genotype(tuple(p))) for p in paths]
    expected = np.array([table.query(s, "cifar10/ori-test") for s in strings],
                        np.float32)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, _score(paths).astype(np.float32))
    # every cell, in one call
    np.testing.assert_array_equal(np.asarray(fitness(ALL_PATHS)),
                                  table.values("cifar10/ori-test"))
    bad = np.array([[0, 0, 0, 0, 0, 5], [0, 0, 0, 0, 0, -1]], np.int32)
    assert np.all(np.isnan(np.asarray(fitness(bad))))


def test_evolution_and_random_search_run_against_the_table():
    table = _full_table()
    space = spaces.get("nb201")
    fitness = table.fitness_fn("cifar10-valid/x-valid")
    res = evolution.regularized_evolution(fitness, space.num_choices,
                                          population_size=20, sample_size=5,
                                          num_cycles=300, batch_size=10,
                                          key=jax.random.key(0))
    hist = np.asarray(res.history.archs)
    np.testing.assert_array_equal(np.asarray(res.history.fitness),
                                  table.query_paths(hist, "cifar10-valid/x-valid"))
    best = np.asarray(res.best_arch)
    assert float(res.best_fitness) == table.query_paths(best, "cifar10-valid/x-valid")
    assert float(res.best_fitness) == pytest.approx(np.max(
        table.query_paths(hist, "cifar10-valid/x-valid")))
    # evolution finds the unique optimum of this easy table (all nor_conv_3x3)
    assert tuple(best) == (3,) * 6
    # random search with the whole population in one call
    rs = evolution.random_search(fitness, space.num_choices, num_samples=500,
                                 key=jax.random.key(1))
    np.testing.assert_array_equal(
        np.asarray(rs.history.fitness),
        table.query_paths(np.asarray(rs.history.archs), "cifar10-valid/x-valid"))
    assert float(rs.best_fitness) <= float(res.best_fitness)


def test_missing_entries_never_win_evolution():
    """A partial table (NaN elsewhere): the best is always an evaluated cell."""
    rng = np.random.default_rng(2)
    keep = rng.choice(nb201.NUM_ARCHS, 3000, replace=False)
    table = tabular.Table.from_records(
        {int(i): {"acc": float(_score(nb201.index_to_path(i)))} for i in keep})
    res = evolution.regularized_evolution(table.fitness_fn("acc"), (5,) * 6,
                                          population_size=16, sample_size=4,
                                          num_cycles=64, key=jax.random.key(3))
    assert np.isfinite(float(res.best_fitness))
    assert int(nb201.path_to_index(np.asarray(res.best_arch))) in set(keep.tolist())


def _nb201_like(arch_strs, values):
    """A small dict shaped like NB201's file: meta_archs in NB201's own order and
    arch2infos[i]['full'/'less'] = ArchResults state dicts of ResultsCount dicts."""
    def trial(dataset, seed, epochs, acc):
        sets = {"cifar10-valid": ["x-valid", "ori-test"], "cifar10": ["ori-test"],
                "cifar100": ["ori-test", "x-valid", "x-test"]}[dataset]
        return {"name": dataset, "seed": seed, "epochs": epochs,
                "params": 0.5 + acc / 1000, "flop": 70.0 + acc / 100, "latency": 0.01,
                "train_acc1es": {e: acc + 5 + e for e in range(epochs)},
                "eval_acc1es": {f"{s}@{e}": acc + k + e * 0.001
                                for k, s in enumerate(sets) for e in range(epochs)},
                "eval_losses": {f"{s}@{e}": 1.0 for s in sets for e in range(epochs)},
                "net_state_dict": None}

    arch2infos = {}
    for i, (s, acc) in enumerate(zip(arch_strs, values)):
        def record(epochs):
            results, seeds = {}, {}
            for dataset in ("cifar10-valid", "cifar10", "cifar100"):
                seeds[dataset] = [777, 888] if dataset != "cifar100" else [777]
                for n, seed in enumerate(seeds[dataset]):
                    results[(dataset, seed)] = trial(dataset, seed, epochs, acc + 2 * n)
            return {"arch_index": i, "arch_str": s, "all_results": results,
                    "dataset_seed": seeds, "clear_net_done": True}
        arch2infos[i] = {"full": record(200), "less": record(12)}
    return {"meta_archs": list(arch_strs), "arch2infos": arch2infos,
            "evaluated_indexes": set(range(len(arch_strs))),
            "total_archs": len(arch_strs)}


def test_converter_core_on_a_dict_shaped_like_nb201(tmp_path):
    strs = [EXAMPLE, "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|"
            "skip_connect~1|skip_connect~2|"]
    data = _nb201_like(strs, [90.0, 80.0])
    table = tabular.convert_nb201(data, str(tmp_path / "nb201.npz"))
    loaded = tabular.Table.load(str(tmp_path / "nb201.npz"))
    assert loaded.meta["hp"] == "200"
    # seeds 777 and 888 have acc and acc + 2: the mean is acc + 1, at epoch 199
    assert loaded.query(EXAMPLE, "cifar10-valid/x-valid") == pytest.approx(
        90.0 + 1 + 0.199)
    assert loaded.query(EXAMPLE, "cifar10/test") == pytest.approx(91.199)
    assert loaded.query(strs[1], "cifar100/x-test") == pytest.approx(80.0 + 2 + 0.199)
    assert loaded.query(strs[1], "cifar100/valid") == pytest.approx(81.199)
    assert loaded.query(EXAMPLE, "cifar10/train") == pytest.approx(90 + 1 + 5 + 199)
    assert loaded.query(EXAMPLE, "cifar10/params") == pytest.approx(0.5 + 91 / 1000)
    assert np.sum(~np.isnan(loaded.values("cifar10/ori-test"))) == 2
    assert set(table.names) == set(loaded.names)
    less = tabular.convert_nb201(data, str(tmp_path / "less.npz"), hp="12")
    assert less.query(EXAMPLE, "cifar10-valid/x-valid") == pytest.approx(91.011)
    data["arch2infos"][0]["full"]["arch_str"] = strs[1]
    with pytest.raises(ValueError, match="differs from meta_archs\\[0\\]"):
        tabular.records_from_nb201(data)
    with pytest.raises(ValueError, match="no 'meta_archs'"):
        tabular.records_from_nb201({"arch2infos": {}})


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed")
def test_converting_a_file_without_torch_says_what_to_install(tmp_path):
    with pytest.raises(ImportError, match="needs torch.*optional extra"):
        tabular.convert_nb201(str(tmp_path / "NAS-Bench-201.pth"),
                              str(tmp_path / "out.npz"))


def test_importing_tabular_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys, jaxnas.tabular as t; "
            "t.Table.from_records({0: {'a': 1.0}}).query(0, 'a'); "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_lookup_throughput_reports_a_rate():
    r = tabular.lookup_throughput(population=1024, repeats=2)
    assert r["population"] == 1024 and r["queries_per_s"] > 0


def test_reinforce_runs_against_the_table():
    from jaxnas.strategies.reinforce import reinforce

    table = _full_table()
    metric = "cifar10-valid/x-valid"
    res = reinforce(table.fitness_fn(metric), spaces.get("nb201").num_choices,
                    batch_size=16, num_steps=60, key=jax.random.key(0),
                    learning_rate=0.1)
    hist = np.asarray(res.history.archs).reshape(-1, 6)
    np.testing.assert_array_equal(np.asarray(res.history.fitness).reshape(-1),
                                  table.query_paths(hist, metric))
    assert float(res.best_fitness) == table.query_paths(np.asarray(res.best_arch), metric)
    assert tuple(np.asarray(res.best_arch)) == (3,) * 6  # the table's unique optimum
