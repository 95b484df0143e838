"""Collects the family's digits runs into report.json and a markdown table (stdout).

  python experiments/results/family_digits/summarize.py RUNS_DIR > table.md

RUNS_DIR holds family/<method>/ (a `jaxnas search` workdir),
family_train/<method>/seed<s>/ (`jaxnas train` workdirs; darts: the genotype the
recorded DARTS comparison searched, experiments/results/darts_digits_vs_random_seed0.json,
retrained with today's code) and family_baseline_check/ (`jaxnas compare --random 8
--seeds 0,1,2`: the random genotypes, retrained with today's code; the recorded
comparisons' retrainings no longer reproduce).

Methods whose runs are absent keep their entries of the existing report.json. Without
family_baseline_check/ the random baseline is the report's recorded one; when it holds
no per-genotype accuracies (the first report), a method's "beats random" and rank are
given only where the recorded range decides them (below or at its minimum, at or above
its maximum), else null.
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("darts", "gdas", "fairdarts", "drnas", "darts_minus", "snas", "proxyless",
           "pcdarts", "pdarts")


def _random_baseline(runs, seeds):
    d = json.load(open(os.path.join(runs, "family_baseline_check", "comparison.json")))
    assert d["seeds"] == list(seeds), d["seeds"]
    return np.asarray([a["test_accuracy"] for n, a in d["architectures"].items()
                       if n != "searched"])


def _standing(mean, random):
    """(random genotypes beaten, rank among them and the method) of a method's mean
    accuracy, from the per-genotype means, or from the recorded range alone."""
    if "per_genotype" in random:
        r_means = np.asarray(random["per_genotype"])
        return (int((r_means < mean - 1e-9).sum()),
                int(1 + (r_means > mean + 1e-9).sum()))
    n, lo, hi = random["num"], random["accuracy_min"], random["accuracy_max"]
    if mean < lo - 1e-9:
        return 0, n + 1
    if mean > hi + 1e-9:
        return n, 1
    # equal to the minimum (maximum): beats none (all), rank depends on other ties
    return (0 if mean < lo + 1e-9 else n if mean > hi - 1e-9 else None), None


def main(runs):
    seeds = (0, 1, 2)
    path = os.path.join(HERE, "report.json")
    old = json.load(open(path)) if os.path.exists(path) else {"methods": {}}
    if os.path.exists(os.path.join(runs, "family_baseline_check", "comparison.json")):
        random = _random_baseline(runs, seeds)
        r_means = random.mean(axis=1)
        baseline = {"num": int(len(r_means)), "accuracy_mean": float(r_means.mean()),
                    "accuracy_min": float(r_means.min()),
                    "accuracy_max": float(r_means.max()),
                    "single_run_std": float(random.std(ddof=1)),
                    "per_genotype": [float(m) for m in r_means]}
    else:
        baseline = old["random"]
    report = {"seeds": list(seeds), "random": baseline, "methods": {}}
    for m in METHODS:
        search = os.path.join(runs, "family", m, "genotype.json")
        trains = [os.path.join(runs, "family_train", m, f"seed{s}", "result.json")
                  for s in seeds]
        if not all(map(os.path.exists, trains)):
            if m in old["methods"]:
                report["methods"][m] = old["methods"][m]
            continue
        acc = [json.load(open(t))["test_accuracy"] for t in trains]
        entry = {"params": json.load(open(trains[0]))["num_params"]}
        if m == "darts":
            entry["genotype"] = json.load(open(trains[0]))["genotype_str"]
            entry["search"] = "recorded (experiments/results/darts_digits_vs_random_seed0.json)"
        else:
            g = json.load(open(search))
            entry.update({"genotype": g["genotype_str"], "steps": g["steps"],
                          "supernet_val_accuracy": g.get("final", {}).get("val_accuracy"),
                          "median_step_s": g.get("timing", {}).get("median_step_s"),
                          "first_step_s": g.get("timing", {}).get("first_step_s")})
        mean = float(np.mean(acc))
        beaten, rank = _standing(mean, baseline)
        entry.update({"test_accuracy": [float(a) for a in acc], "accuracy_mean": mean,
                      "random_beaten": beaten, "rank": rank})
        report["methods"][m] = entry
    json.dump(report, open(path, "w"), indent=1)
    r = report["random"]
    print(f"Random genotypes ({r['num']}, seeds {seeds}): mean {r['accuracy_mean']:.4f} "
          f"(per genotype {r['accuracy_min']:.4f} to {r['accuracy_max']:.4f}; one "
          f"retraining's std {r['single_run_std']:.4f})\n")
    print("| method | supernet val acc | retrained test acc (3 seeds) | beats random "
          "| rank | params |")
    print("|---|---|---|---|---|---|")
    for m, e in report["methods"].items():
        sv = e.get("supernet_val_accuracy")
        beats = ("within the range" if e["random_beaten"] is None
                 else f"{e['random_beaten']} of {r['num']}")
        rank = "-" if e["rank"] is None else f"{e['rank']} of {r['num'] + 1}"
        print(f"| {m} | {'-' if sv is None else f'{sv:.3f}'} | {e['accuracy_mean']:.4f} | "
              f"{beats} | {rank} | {e.get('params', '-')} |")


if __name__ == "__main__":
    main(sys.argv[1])
