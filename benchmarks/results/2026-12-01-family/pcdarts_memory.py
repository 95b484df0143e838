"""XLA's static memory of one search iteration (compile only, nothing run): first-order
DARTS and PC-DARTS (K=4) on the loop mixed op, at the batches given.

  python benchmarks/results/2026-12-01-family/pcdarts_memory.py METHOD BATCH [BATCH...]

METHOD is `darts` (record darts/iteration/first_order) or `pcdarts`
(pcdarts/iteration); the supernet is C=8, 3 cells, 2 nodes, 16x16x3 images, 10
classes, as pcdarts.jsonl. One JSON line per batch on stdout.
"""

import json
import sys
import time

import jax

from jaxnas.bench import family, measure, runner


def main() -> None:
    method, batches = sys.argv[1], [int(b) for b in sys.argv[2:]]
    name = "darts/iteration/first_order" if method == "darts" else f"{method}/iteration"
    for b in batches:
        args = runner.parse(["--suite", "family", "--mixed-op", "loop", "--channels", "8",
                             "--layers", "3", "--nodes", "2", "--image", "16",
                             "--batch", str(b)])
        if method == "darts":
            from jaxnas.bench import darts as darts_bench
            case = darts_bench.case(name, args)
        else:
            case = family.case(name, args)
        t = time.time()
        compiled = jax.jit(case.fn, donate_argnums=(0,)).lower(*case.args).compile()
        print(json.dumps({"name": name, "batch": b, "compile_s": round(time.time() - t, 1),
                          "loadavg_1m": measure._loadavg(),
                          **measure._memory_analysis(compiled)}), flush=True)


if __name__ == "__main__":
    main()
