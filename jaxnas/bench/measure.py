"""Timing, compile time, FLOPs and memory of one jitted function (the benchmark core).

`measure_step` compiles ``jax.jit(fn)`` ahead of time (``lower(...).compile()``, timed),
reads XLA's cost analysis (FLOPs) and memory analysis of the compiled executable, makes
`warmup` calls, then times `repeats` calls with ``jax.block_until_ready`` and reports
their median.  A state-updating step can donate its state and feed its output back in
(``chain``), as a search loop does.

Peak memory is the device's ``peak_bytes_in_use`` where the backend reports memory
statistics (GPU, TPU); on the CPU it is this process's peak resident set size, which
also counts imports, initialisation and the XLA compiler's own memory, so run one
measurement per process (the runner does) for a per-measurement figure.
"""

from __future__ import annotations

import datetime
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def device_peak_bytes(devices: Sequence[Any] | None = None) -> int | None:
    """The largest ``peak_bytes_in_use`` of `devices` (default: the first device),
    or None where the backend keeps no memory statistics (the CPU)."""
    peaks = []
    for device in devices or jax.devices()[:1]:
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 - not every backend implements it
            stats = None
        if stats:
            peaks.append(int(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))))
    return max(peaks) if peaks and max(peaks) > 0 else None


def environment(devices: Sequence[Any] | None = None) -> dict[str, Any]:
    """What a record needs to be comparable: device, versions, date, XLA settings."""
    devices = list(devices or jax.devices()[:1])
    return {
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "num_devices": len(devices),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "compile_cache": bool(_config("jax_compilation_cache_dir"))
        and bool(_config("jax_enable_compilation_cache")),
        "xla_optimizations": not _config("jax_disable_most_optimizations"),
    }


def _config(name: str) -> Any:
    """A jax config value, None where this jax version has no such option."""
    return jax.config.values.get(name)


def _flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        if cost:
            return float(cost.get("flops", 0.0)) or None
    except Exception:  # noqa: BLE001 - some backends have no cost model
        pass
    return None


def _memory_analysis(compiled: Any) -> dict[str, int | None]:
    """XLA's static buffer sizes of the executable (arguments, outputs, temporaries)."""
    try:
        m = compiled.memory_analysis()
        arg, out = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
        temp, alias = int(m.temp_size_in_bytes), int(m.alias_size_in_bytes)
        return {"xla_argument_bytes": arg, "xla_output_bytes": out, "xla_temp_bytes": temp,
                "xla_live_bytes": arg + out + temp - alias}
    except Exception:  # noqa: BLE001 - not every backend implements it
        return {"xla_argument_bytes": None, "xla_output_bytes": None,
                "xla_temp_bytes": None, "xla_live_bytes": None}


def _loadavg() -> float | None:
    """The 1-minute load average (other processes competing for the cores)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _while_loops(compiled: Any) -> int | None:
    """Number of `while` ops in the optimized HLO (XLA's cost analysis counts a loop
    body once, so FLOPs of a program with loops are a lower bound)."""
    try:
        return compiled.as_text().count(" while(")
    except Exception:  # noqa: BLE001
        return None


def measure_step(fn: Callable, args: Sequence[Any], *, repeats: int = 3, warmup: int = 1,
                 items: float = 1, donate_argnums: Sequence[int] = (),
                 chain: Callable[[Any, tuple], tuple] | None = None,
                 devices: Sequence[Any] | None = None) -> dict[str, Any]:
    """Compiles ``jax.jit(fn, donate_argnums)`` on `args`, then times it.

    Args:
      fn: the function to measure (the library's step, unchanged).
      args: its arguments (placed on the devices already).
      items: images (or paths) one call processes; ``items_per_s = items / median``.
      donate_argnums: arguments donated to the call (the state of a search step).
      chain: ``chain(output, args) -> args`` of the next call; needed with donation
        (for example: the new state replaces the old, the batches stay).
      devices: the devices the call runs on (for their memory statistics).

    Returns compile_s (tracing, lowering and XLA compilation), lower_s (its first
    part), step_s (median wall time), min_step_s, times_s (all timed calls),
    cpu_step_s (median process CPU time of a call: on a shared machine, wall time
    grows with other load while CPU time does not), items_per_s, flops (XLA cost
    analysis of one call; of each device's program when sharded), flops_per_s, the
    number of while loops in the program (their bodies are counted once), peak_bytes
    with peak_kind ("device" or "process_rss"), the process peak RSS before and after
    compilation, the 1-minute load average before and after the timed calls, and
    XLA's static memory analysis.  If a call fails (for example out of memory), the
    record says so in "error" and keeps the compile time and memory analysis.
    """
    if donate_argnums and chain is None:
        raise ValueError("donated arguments need `chain` to feed the outputs back")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    args = tuple(args)
    rss_setup = peak_rss_bytes()
    jitted = jax.jit(fn, donate_argnums=tuple(donate_argnums))
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    lower_s = t1 - t0
    rss_compile = peak_rss_bytes()
    flops = _flops(compiled)

    def call(args: tuple) -> tuple:
        out = compiled(*args)
        jax.block_until_ready(out)
        return chain(out, args) if chain is not None else args

    load_start = _loadavg()
    times, cpu_times, error = [], [], None
    try:
        for _ in range(warmup):
            args = call(args)
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            args = call(args)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
        jax.block_until_ready(args)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: keep what was measured
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
    median = statistics.median(times) if times and error is None else None
    device_peak = device_peak_bytes(devices)
    record = {
        "compile_s": round(compile_s, 3),
        "lower_s": round(lower_s, 3),
        "step_s": round(median, 5) if median else None,
        "min_step_s": round(min(times), 5) if median else None,
        "times_s": [round(t, 5) for t in times],
        "cpu_step_s": round(statistics.median(cpu_times), 5) if median else None,
        "items_per_s": round(items / median, 4) if median else None,
        "flops": flops,
        "flops_per_s": round(flops / median, 1) if flops and median else None,
        "hlo_while_loops": _while_loops(compiled),
        "peak_bytes": device_peak if device_peak else peak_rss_bytes(),
        "peak_kind": "device" if device_peak else "process_rss",
        "rss_peak_setup_bytes": rss_setup,
        "rss_peak_compile_bytes": rss_compile,
        "loadavg_1m": [load_start, _loadavg()],
    }
    record.update(_memory_analysis(compiled))
    record.update(environment(devices))
    if error is not None:
        record["error"] = error
    return record


def measure(fn: Callable, *args: Any, repeats: int = 5, warmup: int = 1,
            items: int = 1) -> dict[str, Any]:
    """`measure_step` of a pure function called again and again on the same `args`."""
    return measure_step(fn, args, repeats=repeats, warmup=warmup, items=items)
