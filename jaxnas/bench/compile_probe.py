"""Where the compile time of a DARTS step goes: tracing/lowering vs XLA, per compiler option.

  python -m jaxnas.bench.compile_probe --record darts/iteration/first_order \\
      --channels 8 --layers 5 --batch 8 --options '' \\
      --options xla_llvm_disable_expensive_passes=true --json out.jsonl

Each `--options` value (comma list of `name=value`; '' for XLA's defaults) is measured in
its own subprocess (so no in-process cache is shared): the step is traced and lowered
(`jit(...).lower`, timed as lower_s), compiled with
`lowered.compile(compiler_options=...)` (xla_s), then called `--repeats` times (median
step_s, with process CPU time). XLA's static memory analysis is recorded too
(xla_live_bytes = arguments + outputs + temporaries - aliased). The persistent
compilation cache is switched off in the child, so every figure is a cold compile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

RESULT = "RESULT "


def _parse_options(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                out[key] = value
    return out


def _child(args: argparse.Namespace, options: str) -> dict[str, Any]:
    os.environ["JAXNAS_COMPILATION_CACHE"] = "0"
    if args.quiet:  # as the command line does: no slow-compile banner
        from jaxnas import compilation

        compilation.quiet()
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from jaxnas.bench import darts as darts_bench
    from jaxnas.bench.measure import _memory_analysis, environment

    ns = argparse.Namespace(channels=args.channels, layers=args.layers, nodes=args.nodes,
                            batch=args.batch, image=args.image, num_classes=10,
                            mixed_op=args.mixed_op, impl="auto", devices=1,
                            repeats=args.repeats, warmup=1, remat=args.remat == "cell",
                            remat_edges=args.remat == "edge", scan_cells=args.scan_cells)
    case = darts_bench.case(args.record, ns)
    jitted = jax.jit(case.fn, donate_argnums=(0,) if case.state_out else ())
    c0, t0 = time.process_time(), time.perf_counter()
    traced = jitted.trace(*case.args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    c2, t2 = time.process_time(), time.perf_counter()
    compiled = lowered.compile(compiler_options=_parse_options(options) or None)
    c3, t3 = time.process_time(), time.perf_counter()
    call_args = case.args
    times, cpu = [], []
    for i in range(args.repeats + 1):
        t, c = time.perf_counter(), time.process_time()
        out = compiled(*call_args)
        jax.block_until_ready(out)
        if i:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        if case.state_out:
            call_args = (out if case.state_out == "all" else out[0],) + tuple(call_args[1:])
    record = {"record": args.record, "options": options, "mixed_op": args.mixed_op,
              "remat": args.remat, "scan_cells": args.scan_cells, "channels": args.channels, "layers": args.layers,
              "nodes": args.nodes, "batch": args.batch, "image": args.image,
              "trace_s": round(t1 - t0, 3), "lower_s": round(t2 - t1, 3),
              "xla_s": round(t3 - t2, 3), "compile_s": round(t3 - t0, 3),
              "cpu_lower_s": round(c2 - c0, 3), "cpu_xla_s": round(c3 - c2, 3),
              "step_s": round(statistics.median(times), 4),
              "cpu_step_s": round(statistics.median(cpu), 4),
              "times_s": [round(t, 4) for t in times],
              "loadavg_1m": round(os.getloadavg()[0], 2),
              "xla_flags": os.environ.get("XLA_FLAGS", "")}
    # XLA's CPU backend generates code per fusion: their count tracks its compile time
    record["hlo_fusions"] = sum(1 for ln in compiled.as_text().splitlines()
                                if ln.lstrip("%").startswith("fused_") and ln.endswith("{"))
    record.update(_memory_analysis(compiled))
    record.update(environment())
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", default="darts/iteration/first_order")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--mixed-op", default="scan")
    p.add_argument("--remat", default="none", choices=("none", "cell", "edge"),
                   help="rematerialise each cell, or each edge (--mixed-op edges)")
    p.add_argument("--scan-cells", action="store_true",
                   help="run each run of equal-shaped cells under one scanned body")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--options", action="append", default=None,
                   help="compiler options 'a=1,b=true' ('' = defaults); repeatable")
    p.add_argument("--quiet", action="store_true",
                   help="silence XLA's slow-compile banner as `jaxnas` does (the record "
                        "says whether the banner appeared on stderr)")
    p.add_argument("--json", default=None)
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child is not None:
        print(RESULT + json.dumps(_child(args, args._child)), flush=True)
        return 0
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    # drop the parent's --options / --json pairs before handing the rest to children
    child_argv, skip = [], False
    for a in base:
        if skip:
            skip = False
            continue
        if a in ("--options", "--json"):
            skip = True
            continue
        if a.startswith(("--options=", "--json=")):
            continue
        child_argv.append(a)
    status = 0
    for options in args.options or [""]:
        proc = subprocess.run([sys.executable, "-m", "jaxnas.bench.compile_probe", *child_argv,
                               "--_child", options], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
        if not lines:
            status = 1
            record = {"record": args.record, "options": options,
                      "error": proc.stderr.strip().splitlines()[-1:] or ["no output"]}
        else:
            record = json.loads(lines[-1][len(RESULT):])
        record["slow_compile_banner"] = "Very slow compile" in proc.stderr
        print(json.dumps({k: record.get(k) for k in (
            "options", "mixed_op", "remat", "scan_cells", "layers", "trace_s", "lower_s", "xla_s",
            "compile_s", "cpu_lower_s", "cpu_xla_s", "hlo_fusions", "step_s", "cpu_step_s",
            "xla_live_bytes",
            "slow_compile_banner", "error")}), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(record) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
