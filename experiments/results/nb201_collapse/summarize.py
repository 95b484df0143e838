"""Op weights over time from a DARTS-on-NB201 metrics.jsonl (mean over the 6 edges) and the final per-edge weights.

Run: python experiments/results/nb201_collapse/summarize.py DIR/metrics.jsonl
"""
import json, sys
import numpy as np
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
rows = [json.loads(l) for l in open(sys.argv[1]) if '"arch_weights"' in l]
print("| step | epoch | val_acc | " + " | ".join(OPS) + " | param-free |")
print("|---|---|---|" + "---|" * (len(OPS) + 1))
for r in rows:
    w = np.asarray(r["arch_weights"])
    m = w.mean(0)
    if r is rows[0] or r is rows[-1] or int(round(r.get("epoch", 0))) % 5 == 0:
        print(f"| {r['step']} | {r.get('epoch', 0):.0f} | {r.get('val_accuracy', float('nan')):.3f} | "
              + " | ".join(f"{v:.3f}" for v in m) + f" | {m[0] + m[1] + m[4]:.3f} |")
w = np.asarray(rows[-1]["arch_weights"])
print("\nfinal per-edge weights (rows: edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2):")
for e in w:
    print("  " + " ".join(f"{v:.3f}" for v in e) + f"  -> {OPS[int(np.argmax(e))]}")
