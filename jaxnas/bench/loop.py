"""The search loop's step time against the bare jitted step's, side by side in one run.

  python -m jaxnas.bench.loop --config experiments/darts_digits.py --steps 60 \\
      --json loop.jsonl [--config.KEY=VALUE ...]

`jaxnas bench` times a method's jitted step alone on a fixed batch (each call waited
for). A search also draws and shards batches, fetches and checks metrics, logs,
evaluates and checkpoints. This measures, in one process and one order (bare, serial
loop, overlapped loop, bare again): the bare step's median time; the loop's median
step time (`LoopResult.timing`) with every step's metrics awaited before the next
(`overlap=False`) and with the next step dispatched first (the default). The step
program compiles once: the persistent compilation cache serves the later builds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any


def bare_step_times(config, hooks, repeats: int) -> list[float]:
    """Median-ready times of `repeats` calls of the method's jitted step on one
    fixed set of batches (its own output state fed back in, as `jaxnas bench`)."""
    import jax

    from jaxnas import parallel
    from jaxnas.runners import common

    mesh = parallel.make_mesh(config)
    plan = hooks.build(config, mesh)
    state = common.init_state(plan.init, mesh)
    batches = plan.batches()
    state, metrics = plan.step(state, *batches)  # compiles (or loads the cached one)
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, metrics = plan.step(state, *batches)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t)
    return times


def loop_timing(config, hooks_of, overlap: bool) -> dict[str, Any]:
    """The loop's own timing of a fresh run of `config` (no resume)."""
    from jaxnas.runners import loop

    with tempfile.TemporaryDirectory() as workdir:
        results = loop.run(config, workdir, hooks_of(config), overlap=overlap)
    return results["timing"]


def main(argv: list[str] | None = None) -> int:
    from jaxnas import compilation
    from jaxnas import config as config_lib

    compilation.setup()
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = config_lib.split_config_args(argv)
    p = argparse.ArgumentParser(prog="python -m jaxnas.bench.loop",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a search config file")
    p.add_argument("--steps", type=int, default=60, help="loop steps per run (60)")
    p.add_argument("--repeats", type=int, default=30, help="bare step calls (30)")
    p.add_argument("--json", help="append the record here (one JSON line)")
    args = p.parse_args(rest)

    from jaxnas import methods
    from jaxnas.bench.measure import environment

    config = config_lib.load_config(args.config)
    config_lib.apply_overrides(config, [*overrides, f"num_steps={args.steps}"])
    method = methods.validate(config)
    record: dict[str, Any] = {"config_file": args.config, "overrides": overrides,
                              "steps": args.steps, "repeats": args.repeats}
    bare = bare_step_times(config, method.hooks(config), args.repeats)
    serial = loop_timing(config, method.hooks, overlap=False)
    overlapped = loop_timing(config, method.hooks, overlap=True)
    bare_after = bare_step_times(config, method.hooks(config), args.repeats)
    record.update(
        bare_step_s=round(statistics.median(bare), 5),
        bare_step_after_s=round(statistics.median(bare_after), 5),
        loop_serial_step_s=serial["median_step_s"],
        loop_overlapped_step_s=overlapped["median_step_s"],
        **environment())
    base = (record["bare_step_s"] + record["bare_step_after_s"]) / 2
    record["serial_over_bare"] = round(record["loop_serial_step_s"] / base, 3)
    record["overlapped_over_bare"] = round(record["loop_overlapped_step_s"] / base, 3)
    for key in ("bare_step_s", "loop_serial_step_s", "loop_overlapped_step_s",
                "bare_step_after_s", "serial_over_bare", "overlapped_over_bare"):
        print(f"{key:>24}: {record[key]}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
