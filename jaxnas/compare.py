"""`jaxnas compare`: retrain a searched architecture next to random ones of its space.

The end-to-end check of a search: the architecture it chose and `num_random` uniformly
random architectures of the same space are each retrained from scratch with the same
recipe, for every seed given, and compared on test accuracy and loss. Every run is an
ordinary `jaxnas train` work directory (``DIR/<name>/seed<s>``), so an interrupted
comparison resumes where it stopped; ``DIR/comparison.json`` is rewritten after every
run. Random architectures are their space's (`jaxnas.spaces`); random DARTS genotypes
follow the DARTS paper's random baseline.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

from jaxnas import config as config_lib
from jaxnas import spaces
from jaxnas import workdir as wd

log = logging.getLogger("jaxnas")

SEARCHED = "searched"
_TIE = 1e-9  # mean accuracies closer than this are equal (float rounding of k/n)


def random_architectures(architecture: Any, count: int, seed: int) -> list[Any]:
    """`count` random architectures of `architecture`'s space (seeded, reproducible):
    its space's `random`, with the settings the architecture carries (a DARTS
    genotype's concatenated nodes, a chain genotype's geometry and classes)."""
    return spaces.space_of(architecture).random(seed, count)


def parse_seeds(spec: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ValueError naming the bad entry."""
    seeds = []
    for part in spec.split(","):
        try:
            seeds.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds: expected a comma list of integers, got "
                             f"{part!r} in {spec!r}") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds: seeds must be non-negative, got {spec!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: repeated seed in {spec!r}")
    return seeds


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per architecture mean/std of test accuracy and loss; the searched one's standing.

    `runs[name]` holds the result.json dicts of that architecture's seeds; the name
    `SEARCHED` is the searched architecture, every other name a random one. Its rank
    is 1 + the number of random architectures with a strictly higher mean accuracy
    (means within 1e-9 of each other are ties: the same count of correct images).
    """
    table = {}
    for name, results in runs.items():
        acc = np.array([r["test_accuracy"] for r in results], np.float64)
        loss = np.array([r["test_loss"] for r in results], np.float64)
        table[name] = {
            "seeds": len(results), "params": results[0].get("num_params"),
            "test_accuracy": acc.tolist(), "test_loss": loss.tolist(),
            "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "loss_mean": float(loss.mean()), "loss_std": float(loss.std()),
        }
    summary: dict[str, Any] = {"architectures": table}
    randoms = [v for k, v in table.items() if k != SEARCHED]
    if SEARCHED in table and randoms:
        s = table[SEARCHED]
        r_acc = np.array([v["accuracy_mean"] for v in randoms])
        r_loss = np.array([v["loss_mean"] for v in randoms])
        summary.update({
            "searched_accuracy_mean": s["accuracy_mean"],
            "random_accuracy_mean": float(r_acc.mean()),
            "searched_loss_mean": s["loss_mean"],
            "random_loss_mean": float(r_loss.mean()),
            "searched_rank": int(1 + (r_acc > s["accuracy_mean"] + _TIE).sum()),
            "random_beaten": int((r_acc < s["accuracy_mean"] - _TIE).sum()),
            "num_random": len(randoms),
            "beats_random_mean": bool(s["accuracy_mean"] > r_acc.mean()),
        })
    return summary


def run(config: ml_collections.ConfigDict, architecture: Any,
        workdir: str, *, num_random: int, seeds: Sequence[int],
        random_seed: int = 0) -> dict[str, Any]:
    """Retrains the searched and `num_random` random architectures for every seed.

    Every seed overrides `config.seed`. Finished runs already in `workdir` are reused
    after checking that they are of the same architecture and recipe (ValueError, before
    anything is trained or written, otherwise). Returns (and writes to
    ``workdir/comparison.json``) `summarize`'s dict plus the architectures compared.
    """
    from jaxnas import train

    if not seeds:
        raise ValueError("seeds: expected at least one")
    space = spaces.space_of(architecture)
    kind = space.name
    train.validate_config(config, kind)
    archs = {SEARCHED: architecture}
    for i, a in enumerate(random_architectures(architecture, num_random, random_seed)):
        archs[f"random{i}"] = a
    described = {name: space.to_json(a) for name, a in archs.items()}
    plan = []
    for name, arch in archs.items():
        for seed in seeds:
            run_config = ml_collections.ConfigDict(config.to_dict())
            run_config.seed = int(seed)
            run_dir = os.path.join(workdir, name, f"seed{seed}")
            _check_stored_run(run_dir, name, described[name], run_config)
            plan.append((name, seed, arch, run_config, run_dir))
    workdir = wd.prepare_workdir(workdir)
    runs: dict[str, list[dict[str, Any]]] = {}
    for done, (name, seed, arch, run_config, run_dir) in enumerate(plan, 1):
        path = os.path.join(run_dir, "result.json")
        result = (wd.read_json(path) if wd.exists(path)
                  else train.run(run_config, arch, run_dir))
        runs.setdefault(name, []).append(result)
        log.info("[%d/%d] %s seed %d: test accuracy %.4f, loss %.4f", done, len(plan),
                 name, seed, result["test_accuracy"], result["test_loss"])
        summary = {**summarize(runs), "kind": kind, "seeds": list(seeds),
                   "random_seed": random_seed, "genotypes": described}
        wd.write_json(os.path.join(workdir, "comparison.json"), summary)
    return summary


def _check_stored_run(run_dir: str, name: str, genotype_json: dict[str, Any],
                      run_config: ml_collections.ConfigDict) -> None:
    """ValueError unless a finished run in `run_dir` is of this architecture and recipe
    (an unfinished one is resumed, or refused, by `train.run` itself)."""
    result_path = os.path.join(run_dir, "result.json")
    if not wd.exists(result_path):
        return
    if wd.read_json(result_path).get("genotype") != genotype_json:
        raise ValueError(f"{run_dir} holds a run of another architecture than {name} (a "
                         "different --genotype or --random-seed?); use another --workdir "
                         "or remove it")
    config_path = os.path.join(run_dir, "config.json")
    if not wd.exists(config_path):
        raise ValueError(f"{run_dir} has a result.json but no config.json, so its recipe "
                         "cannot be checked; use another --workdir or remove it")
    stored = config_lib.flatten(wd.read_json(config_path))
    want = config_lib.flatten(json.loads(json.dumps(run_config.to_dict())))
    diff = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
    if diff:
        raise ValueError(f"{run_dir} was trained with another recipe (config keys "
                         f"{', '.join(diff[:5])} differ); use another --workdir or "
                         "remove it")


def format_table(summary: dict[str, Any]) -> str:
    """The comparison as a plain-text table (one row per architecture)."""
    lines = [f"{'architecture':<13} {'params':>8} {'accuracy':>17} {'loss':>17}"]
    for name, v in summary["architectures"].items():
        lines.append(f"{name:<13} {v['params'] or 0:>8d} "
                     f"{v['accuracy_mean']:.4f} +- {v['accuracy_std']:.4f} "
                     f"{v['loss_mean']:.4f} +- {v['loss_std']:.4f}")
    if "searched_rank" in summary:
        lines.append(
            f"searched: accuracy {summary['searched_accuracy_mean']:.4f} against "
            f"{summary['random_accuracy_mean']:.4f} for the mean random architecture; "
            f"rank {summary['searched_rank']} of {summary['num_random'] + 1} "
            f"(beats {summary['random_beaten']} of {summary['num_random']})")
    return "\n".join(lines)
