"""`jaxnas bench` (`python -m jaxnas.bench`): step throughput, compile time, memory, FLOPs.

  jaxnas bench --suite darts --json out.jsonl      # C=16, 8 cells, batch 32
  jaxnas bench --suite oneshot                     # CIFAR chain space, batch 32
  jaxnas bench --suite evolution                   # P = 1, 8, 64
  jaxnas bench --suite all                         # the three above
  jaxnas bench --suite formulations                # scan / fused / loop mixed op
  jaxnas bench --suite kernels                     # depthwise/pool kernels alone
  jaxnas bench --suite family                      # GDAS, SNAS, ... beside DARTS
  jaxnas bench --suite darts --channels 4 --layers 2 --image 8 --batch 2 \\
      --repeats 1 --estimators first_order,darts_exact     # a smoke-sized run

Every measurement (record) runs in its own subprocess, so that its compile time and
peak memory (process peak RSS on the CPU) are its own; records are printed as a table
and, with --json, written one JSON object per line as soon as each finishes.  A record
compiles the library's jitted step ahead of time (timed), calls it --warmup times, then
reports the median of --repeats calls timed with block_until_ready.  See
benchmarks/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

SUITES = ("darts", "oneshot", "evolution", "all", "formulations", "kernels", "family")
ALL = ("darts", "oneshot", "evolution")
DEFAULT_ESTIMATORS = "first_order,darts_fd,darts_exact,amended,implicit_cg"
RESULT = "RESULT "
# Fields every record has (a failed record has them too, set to null, plus "error").
FIELDS = ("name", "config", "images_per_s", "compile_s", "step_s", "peak_bytes",
          "peak_kind", "flops", "flops_per_s", "device_kind", "platform", "num_devices",
          "jax_version", "date")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxnas bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="darts", choices=SUITES,
                   help="what to measure (default: darts; all = darts, oneshot, evolution)")
    g = p.add_argument_group("DARTS supernet (darts, formulations)")
    g.add_argument("--channels", type=int, default=16, help="initial channels C (16)")
    g.add_argument("--layers", type=int, default=8, help="cells (8)")
    g.add_argument("--nodes", type=int, default=4,
                   help="intermediate nodes per cell (4; fewer for smoke runs)")
    g.add_argument("--estimators", default=DEFAULT_ESTIMATORS,
                   help=f"comma list of hypergradient estimators ({DEFAULT_ESTIMATORS})")
    g.add_argument("--mixed-op", default="scan", choices=("scan", "fused", "loop", "edges"),
                   help="mixed-op formulation of the supernet (scan, its default)")
    g.add_argument("--impl", default="auto", choices=("auto", "slices", "taps", "lax"),
                   help="depthwise convolution form (auto: slices on CPU, lax elsewhere)")
    g.add_argument("--remat", action="store_true",
                   help="rematerialise each cell in the backward pass (less memory)")
    g.add_argument("--remat-edges", action="store_true",
                   help="--mixed-op edges: rematerialise each edge (less memory)")
    g.add_argument("--scan-cells", action="store_true",
                   help="run each run of equal-shaped cells under one scanned body")
    g.add_argument("--variants", default="scan,fused,loop",
                   help="formulations suite: mixed-op forms to compare")
    g.add_argument("--kernel-impls", default="slices,taps",
                   help="kernels suite: depthwise implementations to compare "
                        "(slices, taps, lax)")
    g = p.add_argument_group("chain supernet (oneshot, evolution)")
    g.add_argument("--space", default="cifar", choices=("cifar", "digits"),
                   help="chain space: cifar (32x32x3, 16 layers) or digits (8x8x1, tiny)")
    g.add_argument("--population-sizes", default="1,8,64",
                   help="evolution: comma list of population sizes P (1,8,64)")
    g.add_argument("--calib-batches", type=int, default=2,
                   help="evolution: BatchNorm recalibration batches per path (2)")
    g.add_argument("--val-batches", type=int, default=2,
                   help="evolution: validation batches per path (2)")
    g = p.add_argument_group("common")
    g.add_argument("--batch", type=int, default=32, help="images per step (32)")
    g.add_argument("--image", type=int, default=None,
                   help="image side (default 32; 8 for --space digits)")
    g.add_argument("--num-classes", type=int, default=10, help="classes (10)")
    g.add_argument("--repeats", type=int, default=3, help="timed calls; median (3)")
    g.add_argument("--warmup", type=int, default=1, help="untimed calls first (1)")
    g.add_argument("--devices", type=int, default=1,
                   help="devices; >1 shards the batch over a 1-D 'data' mesh (1). On the "
                   "CPU that many host devices are created (they share the cores)")
    g.add_argument("--json", default=None, metavar="PATH",
                   help="append one JSON record per measurement (JSON lines) to PATH (an earlier run's records are kept)")
    g.add_argument("--only", default=None,
                   help="comma list of record names or name prefixes to run")
    g.add_argument("--timeout", type=float, default=0,
                   help="seconds a record may take before it is stopped (0: no limit)")
    p.add_argument("--_record", default=None, help=argparse.SUPPRESS)
    return p


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected a comma list of integers") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} {text!r}: expected positive integers")
    return values


def parse(argv: list[str], parser: argparse.ArgumentParser | None = None
          ) -> argparse.Namespace:
    """Parsed and checked flags (`parser` defaults to `build_parser()`)."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        args.estimator_list = [e.strip() for e in args.estimators.split(",") if e.strip()]
        from jaxnas.strategies.darts import ESTIMATORS  # no device is touched here

        bad = [e for e in args.estimator_list if e not in ESTIMATORS]
        if bad or not args.estimator_list:
            raise ValueError(f"--estimators {args.estimators!r}: expected a comma list of "
                             f"{', '.join(ESTIMATORS)}")
        args.population_list = _int_list(args.population_sizes, "--population-sizes")
        args.kernel_impl_list = [v.strip() for v in args.kernel_impls.split(",") if v.strip()]
        bad = [v for v in args.kernel_impl_list if v not in ("slices", "taps", "lax")]
        if bad or not args.kernel_impl_list:
            raise ValueError(f"--kernel-impls {args.kernel_impls!r}: expected a comma list "
                             "of slices, taps, lax")
        args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in args.variant_list if v not in ("scan", "fused", "loop", "edges")]
        if bad or not args.variant_list:
            raise ValueError(f"--variants {args.variants!r}: expected a comma list of "
                             "scan, fused, loop, edges")
        for flag in ("channels", "layers", "nodes", "batch", "num_classes", "repeats",
                     "devices", "calib_batches", "val_batches"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be positive")
        if args.warmup < 0 or (args.image is not None and args.image < 1):
            raise ValueError("--warmup must be >= 0 and --image positive")
    except ValueError as e:
        parser.error(str(e))
    return args


def record_names(args: argparse.Namespace) -> list[str]:
    """The records a run measures, in order (names are a contract)."""
    suites = ALL if args.suite == "all" else (args.suite,)
    names: list[str] = []
    for suite in suites:
        if suite == "darts":
            names.append("darts/weight_step")
            for e in args.estimator_list:
                names += [f"darts/arch_step/{e}", f"darts/iteration/{e}"]
        elif suite == "family":  # family.py: beside first-order DARTS
            from jaxnas.bench.family import RECORDS

            names += ["darts/iteration/first_order", *RECORDS]
        elif suite == "oneshot":
            names += ["oneshot/spos_step", "oneshot/fairnas_step"]
        elif suite == "evolution":
            names += [f"evolution/population_eval/P={n}" for n in args.population_list]
        elif suite == "kernels":
            from jaxnas.bench.kernels import KERNELS

            names += [f"kernels/{k}/{i}" for k in KERNELS if k != "max_pool"
                      for i in args.kernel_impl_list]
            names += ["kernels/max_pool/slices", "kernels/max_pool/reduce_window"]
        else:
            names += [f"supernet/fwd_bwd/{v}" for v in args.variant_list]
    if args.only:
        keep = [k.strip() for k in args.only.split(",") if k.strip()]
        names = [n for n in names if any(n == k or n.startswith(k) for k in keep)]
    return names


def suite_module(name: str):
    """The module that measures record `name`."""
    if name.startswith("darts/"):
        from jaxnas.bench import darts as suite
    elif name.startswith("oneshot/"):
        from jaxnas.bench import oneshot as suite
    elif name.startswith("evolution/"):
        from jaxnas.bench import evolution as suite
    elif name.startswith("supernet/"):
        from jaxnas.bench import supernet as suite
    elif name.startswith("kernels/"):
        from jaxnas.bench import kernels as suite
    elif "/iteration" in name:
        from jaxnas.bench import family as suite
    else:
        raise ValueError(f"unknown record {name!r}")
    return suite


def use_devices(count: int) -> None:
    """Asks for `count` host devices on the CPU; must precede the first device use."""
    if count > 1:
        import jax

        jax.config.update("jax_num_cpu_devices", count)


def run_record(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measures record `name` in this process (the child side)."""
    from jaxnas.bench import common

    use_devices(args.devices)
    case = suite_module(name).case(name, args)
    return common.measure_case(name, case, args.repeats, args.warmup)


def _failed(name: str, error: str) -> dict[str, Any]:
    record: dict[str, Any] = {k: None for k in FIELDS}
    record.update(name=name, error=error)
    return record


def spawn(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """Runs one record in a fresh Python process; its RESULT line is the record."""
    cmd = [sys.executable, "-m", "jaxnas.bench", *argv, "--_record", name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout if timeout > 0 else None)
    except subprocess.TimeoutExpired:
        return _failed(name, f"stopped after --timeout {timeout:g} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if lines:  # a record, also of a step that failed after compiling (out of memory)
        record = json.loads(lines[-1][len(RESULT):])
        if record.get("error"):
            print(f"{name} failed: {record['error']}", file=sys.stderr)
        return record
    tail = (proc.stderr or proc.stdout)[-3000:]
    killed = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
    print(f"{name} failed with exit status {proc.returncode}{killed}:\n{tail}",
          file=sys.stderr)
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return _failed(name, f"exit status {proc.returncode}{killed}: {last}"[:500])


def _rate(r: dict[str, Any]) -> tuple[float | None, str]:
    if r.get("paths_per_s") is not None:
        return r["paths_per_s"], "path/s"
    return r.get("images_per_s"), "img/s"


def format_table(records: list[dict[str, Any]]) -> str:
    """A readable table of records (failed ones show their error)."""
    head = (f"{'name':32s} {'compile_s':>9s} {'step_s':>9s} {'cpu_s':>8s} {'rate':>9s} "
            f"{'unit':6s} {'GFLOP/step':>10s} {'GFLOP/s':>8s} {'peak_MB':>8s}")
    rows = [head, "-" * len(head)]
    for r in records:
        if r.get("error"):
            compiled = (f"compiled in {r['compile_s']:.0f} s, " if r.get("compile_s")
                        else "")
            need = (f"XLA needs {r['xla_live_bytes'] / 2**30:.1f} GiB; "
                    if r.get("xla_live_bytes") else "")
            rows.append(f"{r['name']:32s} FAILED: {compiled}{need}{r['error'][:90]}")
            continue
        rate, unit = _rate(r)
        gflop = f"{r['flops'] / 1e9:10.2f}" if r.get("flops") else f"{'-':>10s}"
        gflops = f"{r['flops_per_s'] / 1e9:8.2f}" if r.get("flops_per_s") else f"{'-':>8s}"
        rows.append(f"{r['name']:32s} {r['compile_s']:9.1f} {r['step_s']:9.3f} "
                    f"{r.get('cpu_step_s') or 0:8.2f} {rate:9.3f} {unit:6s} {gflop} "
                    f"{gflops} {r['peak_bytes'] / 2**20:8.0f}")
    ok = [r for r in records if not r.get("error")]
    if ok:
        r = ok[0]
        rows.append(f"device: {r['device_kind']} ({r['platform']}, {r['num_devices']} "
                    f"device(s), {r['cpu_count']} CPUs), jax {r['jax_version']}, "
                    f"{r['date']}; peak = {r['peak_kind']}; step_s = median of "
                    f"{len(r.get('times_s', []))} after warm-up")
    return "\n".join(rows)


def _child_argv(argv: list[str]) -> list[str]:
    """The arguments a child gets: all but --json (the parent writes the records)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--json":
            skip = True
            continue
        if a.startswith("--json="):
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args._record:
        record = run_record(args._record, args)
        print(RESULT + json.dumps(record), flush=True)
        return 1 if record.get("error") else 0
    names = record_names(args)
    if not names:
        print("jaxnas bench: --only selects no record of this suite", file=sys.stderr)
        return 2
    child_argv = _child_argv(argv)
    out = open(args.json, "a") if args.json else None
    records = []
    try:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            record = spawn(name, child_argv, args.timeout)
            records.append(record)
            if not record.get("error"):
                print(f"[{i}/{len(names)}] {name}: compile {record['compile_s']:.1f} s, "
                      f"step {record['step_s']:.3f} s, {time.perf_counter() - t:.0f} s in "
                      f"all", file=sys.stderr, flush=True)
            if out:
                out.write(json.dumps(record) + "\n")
                out.flush()
    finally:
        if out:
            out.close()
    print(format_table(records), flush=True)
    return 1 if any(r.get("error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
