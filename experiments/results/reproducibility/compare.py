"""Compare two search workdirs: first differing record, divergence growth, genotypes,
and how close the final derivation's decisions were (margins)."""
import json, sys, os
import numpy as np

def records(d):
    return [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]

def margins(w):
    """per cell: smallest op margin (best - second non-none op on a kept edge) and the
    edge margin (weakest kept edge's strength - strongest dropped edge's) per node."""
    out = {}
    for cell, rows in w.items():
        rows = np.asarray(rows)
        ops = np.sort(rows[:, 1:], axis=1)  # column 0 is 'none'
        strength, op_margin = ops[:, -1], ops[:, -1] - ops[:, -2]
        start, n, k = 0, 2, []
        edge_m, kept_op_m = [], []
        while start < len(rows):
            s = strength[start:start + n]
            order = np.argsort(-s)
            if n > 2:
                edge_m.append(float(s[order[1]] - s[order[2]]))
            kept_op_m += [float(op_margin[start + i]) for i in order[:2]]
            start += n; n += 1
        out[cell] = {"min_op_margin": min(kept_op_m), "min_edge_margin": min(edge_m) if edge_m else None,
                     "median_op_margin": float(np.median(kept_op_m)),
                     "weight_spread": float(rows.max() - rows.min())}
    return out

a, b = sys.argv[1], sys.argv[2]
ra, rb = records(a), records(b)
first = None
for x, y in zip(ra, rb):
    keys = [k for k in x if k not in ("time",) and k in y]
    if any(json.dumps(x[k]) != json.dumps(y[k]) for k in keys):
        first = x["step"]; break
print("records", len(ra), len(rb), "first differing record at step", first)
for x, y in zip(ra, rb):
    if "arch_weights" in x and "arch_weights" in y:
        d = max(float(np.max(np.abs(np.asarray(x["arch_weights"][c]) - np.asarray(y["arch_weights"][c])))) for c in x["arch_weights"])
        l = abs(x["train_loss"] - y["train_loss"]) / abs(x["train_loss"])
        print(f"  step {x['step']:5d} max |dw| {d:.3e}  rel d train_loss {l:.3e}  val_acc {x.get('val_accuracy')} {y.get('val_accuracy')}")
ga = json.load(open(os.path.join(a, "genotype.json"))); gb = json.load(open(os.path.join(b, "genotype.json")))
print("genotype a:", ga["genotype_str"]); print("genotype b:", gb["genotype_str"])
print("same genotype:", ga["genotype_str"] == gb["genotype_str"])
print("margins a:", json.dumps(margins(ga["arch_weights"])))
print("margins b:", json.dumps(margins(gb["arch_weights"])))
