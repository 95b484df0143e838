"""Where a benchmark record's step spends its time: an XLA-op profile.

  python -m jaxnas.bench.profile darts/weight_step                  # default sizes
  python -m jaxnas.bench.profile darts/arch_step/darts_exact --batch 8 --top 30
  python -m jaxnas.bench.profile oneshot/fairnas_step --space digits --batch 8

Builds the same function and arguments as the record (any `jaxnas bench` flag
applies), compiles it, makes --warmup calls, then traces --calls calls with
`jax.profiler` (on the CPU with XLA's per-op trace events,
``--xla_cpu_enable_xprof_traceme``) and sums the time of every XLA op of the
program.  Ops are grouped by kind: the heaviest HLO opcode they contain
(convolution, dot, reduce-window, reduce, gather, scatter, copy/transpose, ...,
else elementwise).  Ops of independent branches can run concurrently on several
threads, so the op times may add up to more than the wall time.  --trace-dir keeps
the trace (``perfetto_trace.json.gz``, for https://ui.perfetto.dev or TensorBoard).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

# Heaviest first: an op is classed by the first of these its computation contains.
KINDS = ("convolution", "dot", "custom-call", "reduce-window", "select-and-scatter",
         "scatter", "gather", "sort", "reduce", "transpose", "copy", "concatenate", "pad",
         "dynamic-update-slice", "dynamic-slice", "slice", "broadcast", "while",
         "conditional")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][a-z\-]*)\(")
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo(text: str) -> tuple[dict[str, tuple[str, str, str]], dict[str, set[str]]]:
    """``(instructions, computations)`` of an HLO module's text.

    instructions: name -> (opcode, output type, the line); computations: name ->
    the opcodes it contains (through the computations it calls).
    """
    instrs: dict[str, tuple[str, str, str]] = {}
    opcodes: dict[str, set[str]] = collections.defaultdict(set)
    calls: dict[str, set[str]] = collections.defaultdict(set)
    comp = None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m and "=" not in line.split("{")[0]:
            comp = m.group(1)
            continue
        m = _INSTR.match(line)
        if not m or comp is None:
            continue
        name, shape, opcode = m.groups()
        instrs[name] = (opcode, shape, line.strip())
        opcodes[comp].add(opcode)
        for callee in re.findall(r"(?:calls|to_apply|body|condition|branch_computations)="
                                 r"\{?%?([\w.\-]+)", line):
            calls[comp].add(callee)

    def closure(c: str, seen: set[str]) -> set[str]:
        if c in seen:
            return set()
        seen.add(c)
        out = set(opcodes.get(c, ()))
        for callee in calls.get(c, ()):
            out |= closure(callee, seen)
        return out

    return instrs, {c: closure(c, set()) for c in opcodes}


def op_kind(name: str, instrs: dict, comps: dict) -> str:
    opcode, _, line = instrs[name]
    contained = {opcode}
    for callee in re.findall(r"calls=\{?%?([\w.\-]+)", line):
        contained |= comps.get(callee, set())
    for kind in KINDS:
        if kind in contained:
            return kind
    return "elementwise"


def op_times(trace_dir: str, instrs: dict) -> collections.Counter:
    """Total microseconds per XLA op name in the trace under `trace_dir`."""
    (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                        recursive=True)
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    totals: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instrs:
            totals[e["name"]] += float(e.get("dur", 0.0))
    return totals


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_xprof_traceme" not in flags:  # before jax starts
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_enable_xprof_traceme=true".strip()
    from jaxnas.bench import runner

    parser = runner.build_parser()
    parser.prog = "python -m jaxnas.bench.profile"
    parser.description = __doc__
    parser.add_argument("record", help="a record name, e.g. darts/weight_step")
    parser.add_argument("--calls", type=int, default=1, help="traced calls (1)")
    parser.add_argument("--top", type=int, default=25, help="ops listed (25)")
    parser.add_argument("--trace-dir", default=None, help="keep the trace here")
    args = runner.parse(argv, parser)
    runner.use_devices(args.devices)
    import jax

    case = runner.suite_module(args.record).case(args.record, args)
    donate = (0,) if case.state_out else ()
    t = time.perf_counter()
    compiled = jax.jit(case.fn, donate_argnums=donate).lower(*case.args).compile()
    print(f"{args.record}: compiled in {time.perf_counter() - t:.1f} s", flush=True)
    instrs, comps = parse_hlo(compiled.as_text())

    def call(call_args: tuple) -> tuple:
        out = compiled(*call_args)
        jax.block_until_ready(out)
        if case.state_out is None:
            return call_args
        state = out if case.state_out == "all" else out[0]
        return (state,) + tuple(call_args[1:])

    call_args = case.args
    for _ in range(args.warmup):
        call_args = call(call_args)
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="jaxnas-profile-")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        t = time.perf_counter()
        for _ in range(args.calls):
            call_args = call(call_args)
        wall = (time.perf_counter() - t) / args.calls
    totals = op_times(trace_dir, instrs)
    total = sum(totals.values()) / args.calls / 1e6
    by_kind: collections.Counter = collections.Counter()
    for name, us in totals.items():
        by_kind[op_kind(name, instrs, comps)] += us
    print(f"wall {wall:.3f} s a call (traced); XLA op time {total:.3f} s a call over "
          f"{len(totals)} ops")
    print(f"\n{'kind':22s} {'s/call':>8s} {'share':>6s}")
    for kind, us in by_kind.most_common():
        s = us / args.calls / 1e6
        print(f"{kind:22s} {s:8.4f} {s / total:6.1%}")
    print(f"\n{'op':34s} {'kind':20s} {'s/call':>8s} {'share':>6s}  output")
    for name, us in totals.most_common(args.top):
        s = us / args.calls / 1e6
        shape = instrs[name][1][:60]
        print(f"{name[:34]:34s} {op_kind(name, instrs, comps):20s} {s:8.4f} "
              f"{s / total:6.1%}  {shape}")
    if args.trace_dir:
        print(f"\ntrace: {trace_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
