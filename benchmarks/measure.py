"""Timing, compile time, FLOPs and memory of one jitted function (the benchmark core)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def device_peak_bytes() -> int | None:
    """Peak bytes in use on the first device, where the backend reports it."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))) or None


def measure(fn: Callable, *args: Any, repeats: int = 5, warmup: int = 1,
            items: int = 1) -> dict[str, Any]:
    """Compiles `jax.jit(fn)` on `args`, then times `repeats` calls after `warmup`.

    Returns compile_s (lowering + XLA compilation), the median and min seconds per call,
    items_per_s (items / median), the XLA cost-analysis FLOPs of one call, achieved
    FLOP/s, and peak memory (device stats where present, else process peak RSS).
    """
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops = None
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        if cost:
            flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # noqa: BLE001 - some backends have no cost model
        flops = None
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    device_peak = device_peak_bytes()
    return {
        "compile_s": round(compile_s, 3),
        "step_s": round(median, 5),
        "min_step_s": round(min(times), 5),
        "items_per_s": round(items / median, 3),
        "flops": flops,
        "flops_per_s": round(flops / median, 1) if flops else None,
        "peak_bytes": device_peak if device_peak else peak_rss_bytes(),
        "peak_kind": "device" if device_peak else "process_rss",
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
    }
