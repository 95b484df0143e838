"""DARTS search supernet forward+backward: fused vs loop mixed op, one process each.

  python -m benchmarks.supernet                 # C=16, 8 cells, batch 32 of 32x32x3
  python -m benchmarks.supernet --channels 4 --layers 3 --batch 2 --image 8

Each variant runs in its own subprocess so that its compile time and peak memory are
its own; the table compares them side by side from one invocation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any


def run_variant(mixed_op: str, channels: int, layers: int, batch: int, image: int,
                repeats: int, impl: str) -> dict[str, Any]:
    """Measures one formulation in this process."""
    import jax
    import jax.numpy as jnp
    import optax

    from benchmarks.measure import measure
    from jaxnas.supernet.darts import DartsSupernet, init_key, uniform_arch

    model = DartsSupernet(channels=channels, layers=layers, num_classes=10,
                          mixed_op=mixed_op, impl=impl)
    key = jax.random.key(0)
    images = jax.random.normal(key, (batch, image, image, 3), jnp.float32)
    labels = jnp.arange(batch) % 10
    arch = uniform_arch()
    variables = jax.jit(lambda k, x: model.init(k, x, arch))(init_key(0), images)

    def fwd_bwd(params, stats, arch, images, labels):
        def loss(p):
            logits, upd = model.apply({"params": p, "batch_stats": stats}, images, arch,
                                      train=True, mutable=["batch_stats"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return ce, upd

        (value, upd), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return value, grads, upd

    result = measure(fwd_bwd, variables["params"], variables["batch_stats"], arch, images,
                     labels, repeats=repeats, items=batch)
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    result.update(name=f"supernet/fwd_bwd/{mixed_op}",
                  config=dict(channels=channels, layers=layers, batch=batch, image=image,
                              impl=impl, params=int(n_params)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--impl", default="auto", choices=("auto", "taps", "lax"))
    parser.add_argument("--variants", default="scan,fused,loop")
    parser.add_argument("--json", default=None, help="write one JSON record per line here")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._one:
        record = run_variant(args._one, args.channels, args.layers, args.batch, args.image,
                             args.repeats, args.impl)
        print("RESULT " + json.dumps(record), flush=True)
        return 0
    records = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, "-m", "benchmarks.supernet", "--_one", variant,
               "--channels", str(args.channels), "--layers", str(args.layers),
               "--batch", str(args.batch), "--image", str(args.image),
               "--repeats", str(args.repeats), "--impl", args.impl]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        records.append(json.loads(lines[-1][len("RESULT "):]))
    print(format_table(records))
    if args.json:
        with open(args.json, "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    return 0


def format_table(records: list[dict[str, Any]]) -> str:
    head = (f"{'name':34s} {'compile_s':>9s} {'step_s':>8s} {'img/s':>8s} "
            f"{'GFLOP/step':>10s} {'GFLOP/s':>8s} {'peak_MB':>8s}")
    rows = [head]
    for r in records:
        gflop = (r["flops"] or 0) / 1e9
        rate = (r["flops_per_s"] or 0) / 1e9
        rows.append(f"{r['name']:34s} {r['compile_s']:9.2f} {r['step_s']:8.3f} "
                    f"{r['items_per_s']:8.2f} {gflop:10.2f} {rate:8.2f} "
                    f"{r['peak_bytes'] / 2**20:8.0f}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
