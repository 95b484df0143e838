"""Hardware-aware objectives: per-op cost tables of the chain space and MnasNet's
latency-aware reward, as jittable fitness functions.

A table cost is ``fixed + sum_l table[l, a_l]`` (`table_cost`): exact for the
parameter count (`jaxnas.spaces.chain.param_table`) and for the multiply-accumulate
count of convolutions and dense layers (`chain_macs_table`; BatchNorm, ReLU6 and
pooling are not counted), and the usual additive model of latency.  MnasNet (Tan et
al. 2019) scores ``accuracy * (cost / target) ** w`` with ``w = -0.07`` for a soft
constraint (`mnasnet_reward`).  A budget that no architecture of the space meets is
refused before anything compiles (`check_budget`).  For the gradient-based family the
same table gives a differentiable expected cost under per-layer op probabilities
(`expected_cost`, ProxylessNAS' latency loss).

Measured latency (`measure_latency_table`): each choice of each layer is jitted alone
at its real input shape (inference mode) and timed, the median of ``repeats`` calls
after a warm-up; the stem and head are the fixed part.  The table is a JSON record
(`save_latency_table` / `load_latency_table`) naming the device kind it was measured
on, so a table measured on one machine can drive a search on another; loading it for
another space, class count or image size is refused.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces import chain as space_lib
from jaxnas.types import Array

MNASNET_W = -0.07  # Tan et al. 2019: alpha = beta = -0.07 (soft latency constraint)


def chain_macs_table(space: space_lib.ChainSpace, num_classes: int,
                     image_size: int) -> tuple[int, np.ndarray]:
    """``(fixed, table int64[L, K])``: multiply-accumulates of one image.

    Stem ``Ho Wo 9 C_in C_stem``; a block with hidden width ``h = e C_in``: expand
    ``H W C_in h`` (at its input size), depthwise ``Ho Wo k^2 h``, project
    ``Ho Wo h C_out`` (at its output size); head ``H W C_last C_head`` plus the
    classifier ``C_head * classes``.
    """
    size = (image_size - 1) // space.stem_stride + 1
    fixed = size * size * 9 * space.in_channels * space.stem_channels
    rows = []
    for spec in space.layers():
        out = (size - 1) // spec.stride + 1
        rows.append([size * size * spec.in_channels * c.expansion * spec.in_channels
                     + out * out * c.kernel ** 2 * c.expansion * spec.in_channels
                     + out * out * c.expansion * spec.in_channels * spec.out_channels
                     for c in space_lib.CHOICES])
        size = out
    fixed += size * size * space.widths[-1] * space.head_channels
    fixed += space.head_channels * num_classes
    return int(fixed), np.asarray(rows, np.int64)


def table_cost(fixed: float, table: np.ndarray) -> Callable[[Array], Array]:
    """``cost_fn(archs int32[N, L]) -> float32[N]``: ``fixed + sum_l table[l, a_l]``."""
    t = jnp.asarray(np.asarray(table, np.float64), jnp.float32)
    rows = jnp.arange(t.shape[0])

    def cost_fn(archs: Array) -> Array:
        return fixed + jnp.sum(t[rows, jnp.asarray(archs, jnp.int32)], axis=1)

    return cost_fn


def expected_cost(probs: Array, table: Array) -> Array:
    """``sum_l sum_i probs[..., l, i] * table[l, i]``: the expected table cost (less
    the fixed part) of a path drawn layer by layer from ``probs`` (ProxylessNAS, Cai et
    al. 2019).  Linear in ``probs`` (its gradient is ``table``), so it differentiates
    through any relaxation that produces the probabilities; leading axes of ``probs``
    (a batch of distributions) are kept.
    """
    t = jnp.asarray(table, jnp.result_type(probs, jnp.float32))
    if jnp.shape(probs)[-2:] != t.shape:
        raise ValueError(f"expected_cost: probs of shape {jnp.shape(probs)} do not end "
                         f"in the table's shape {t.shape} (layers, choices)")
    return jnp.sum(probs * t, axis=(-2, -1))


def with_expected_cost(relaxation: Any, table: Any, weight: float) -> Any:
    """``relaxation`` (`jaxnas.relax.Relaxation`) with ``weight * expected_cost(
    relaxation.expected(alphas), table)`` added to its penalty: the expected-cost
    (latency) loss of ProxylessNAS on the architecture objective of any bilevel
    method, under that method's own expected op weights (softmax for DARTS, GDAS and
    SNAS, sigmoids for FairDARTS, the Dirichlet mean for DrNAS).  ``table`` is shaped
    like the alphas (a pytree of them: one table per leaf)."""
    base = relaxation.penalty

    def penalty(alphas, step):
        probs = relaxation.expected(alphas)
        cost = sum(expected_cost(p, t) for p, t in
                   zip(jax.tree.leaves(probs), jax.tree.leaves(table)))
        extra = weight * cost
        return extra if base is None else base(alphas, step) + extra

    return relaxation._replace(penalty=penalty)


def check_budget(fixed: float, table: np.ndarray, budget: float,
                 name: str = "budget") -> None:
    """ValueError when even the cheapest architecture of the table exceeds ``budget``
    (before a search compiles), naming the cheapest cost."""
    cheapest = float(fixed + np.asarray(table).min(axis=1).sum())
    if cheapest > budget:
        raise ValueError(f"{name}={budget:g} is met by no architecture of this space: "
                         f"the cheapest costs {cheapest:g}")


def mnasnet_reward(accuracy: Array, cost: Array, target: float,
                   w: float = MNASNET_W) -> Array:
    """MnasNet's ``accuracy * (cost / target) ** w`` (w < 0 penalises cost)."""
    if target <= 0:
        raise ValueError(f"target must be positive, got {target}")
    return accuracy * (cost / target) ** w


def mnasnet_fitness(accuracy_fn: Callable[[Array], Array],
                    cost_fn: Callable[[Array], Array], target: float,
                    w: float = MNASNET_W) -> Callable[[Array], Array]:
    """A fitness ``int32[N, L] -> float32[N]`` (for evolution, REINFORCE) of the
    reward of ``accuracy_fn`` and ``cost_fn``."""
    if target <= 0:
        raise ValueError(f"target must be positive, got {target}")

    def fitness(archs: Array) -> Array:
        return mnasnet_reward(accuracy_fn(archs), cost_fn(archs), target, w)

    return fitness


def chain_tables(space: space_lib.ChainSpace, num_classes: int, image_size: int
                 ) -> dict[str, tuple[int, np.ndarray]]:
    """The chain space's per-op tables by name: ``params`` and ``macs``."""
    return {"params": space_lib.param_table(space, num_classes),
            "macs": chain_macs_table(space, num_classes, image_size)}


def describe_table(table: np.ndarray, names: Sequence[str] = space_lib.CHOICE_NAMES
                   ) -> list[dict[str, int]]:
    """Rows of a table as ``{choice name: cost}`` dicts (for JSON reports)."""
    return [{n: int(v) for n, v in zip(names, row)} for row in np.asarray(table)]


# ----------------------------------------------------------------------------------
# Measured latency tables.

LATENCY_FORMAT = "jaxnas.latency_table.v1"


# "wall": elapsed time (the latency a user sees); "process": this process's CPU time
# over all its threads, which other jobs on a shared CPU do not inflate (CPU only:
# it does not see time spent on an accelerator)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def time_jitted(fn: Callable, *args, repeats: int, warmup: int = 2,
                clock: str = "wall") -> float:
    """Median seconds (``clock``, see `CLOCKS`) of ``jax.jit(fn)(*args)`` over
    ``repeats`` calls, each waited for, after ``warmup`` calls (compilation
    excluded)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}: expected one of {', '.join(CLOCKS)}")
    now = CLOCKS[clock]
    compiled = jax.jit(fn).lower(*args).compile()
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = now()
        jax.block_until_ready(compiled(*args))
        times.append(now() - start)
    return float(statistics.median(times))


def _time_module(module: Any, shape: tuple[int, ...], repeats: int, warmup: int,
                 seed: int, clock: str) -> float:
    """Median seconds of one inference call of a flax ``module`` on ``shape``."""
    x = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
    variables = module.init(jax.random.key(seed + 1), x, train=False)
    return time_jitted(lambda v, x: module.apply(v, x, train=False), variables, x,
                       repeats=repeats, warmup=warmup, clock=clock)


def device_description() -> dict[str, str]:
    """The device the tables are measured on (kind, platform, count, jax version)."""
    d = jax.devices()[0]
    return {"device_kind": str(d.device_kind), "platform": str(d.platform),
            "device_count": jax.device_count(), "jax": jax.__version__}


def measure_latency_table(space: space_lib.ChainSpace, num_classes: int,
                          image_size: int, *, batch: int, repeats: int = 20,
                          warmup: int = 2, impl: str = "auto", seed: int = 0,
                          clock: str = "wall") -> dict[str, Any]:
    """Per-op latency (milliseconds) of the chain space on the current device.

    Every choice of every searchable layer runs alone as one jitted inference call of
    the discrete block (`jaxnas.networks.chain.Block`, unpadded) on its real input
    shape ``[batch, size, size, c_in]``; the stem and head (with the classifier) are
    timed the same way and form ``fixed``.  Returns the JSON record
    (`latency_table` turns it into ``(fixed, table)`` for `table_cost` and
    `expected_cost`).
    """
    from jaxnas.networks import chain as net_lib
    from jaxnas.supernet import chain_kernels

    if batch < 1 or image_size < 1:
        raise ValueError(f"need batch >= 1 and image_size >= 1, got {batch}, "
                         f"{image_size}")
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}: expected one of {', '.join(CLOCKS)}")
    ms = 1e3
    size = (image_size - 1) // space.stem_stride + 1
    stem = ms * _time_module(chain_kernels.Stem(space), (batch, image_size, image_size,
                                                         space.in_channels),
                             repeats, warmup, seed, clock)
    rows = []
    for l, spec in enumerate(space.layers()):
        rows.append([ms * _time_module(net_lib.Block(spec, c, impl),
                                       (batch, size, size, spec.in_channels),
                                       repeats, warmup, seed + l, clock)
                     for c in range(len(space_lib.CHOICES))])
        size = (size - 1) // spec.stride + 1
    head = ms * _time_module(chain_kernels.Head(space, num_classes),
                             (batch, size, size, space.widths[-1]), repeats, warmup,
                             seed, clock)
    return {"format": LATENCY_FORMAT, "unit": "ms", **device_description(),
            "space": space.to_dict(), "num_classes": int(num_classes),
            "image_size": int(image_size), "batch": int(batch),
            "repeats": int(repeats), "warmup": int(warmup), "impl": impl,
            "clock": clock,
            "fixed": stem + head, "fixed_parts": {"stem": stem, "head": head},
            "choices": list(space_lib.CHOICE_NAMES), "table": rows}


def measure_network_latency(space: space_lib.ChainSpace, path: Sequence[int],
                            num_classes: int, image_size: int, *, batch: int,
                            repeats: int = 20, warmup: int = 2, impl: str = "auto",
                            seed: int = 0, clock: str = "wall") -> float:
    """Milliseconds of one jitted inference call of the whole discrete network of
    ``path`` (what the additive table model predicts)."""
    from jaxnas.networks import chain as net_lib

    net = net_lib.ChainNet(space, space_lib.check_path(space, path), num_classes, impl)
    return 1e3 * _time_module(net, (batch, image_size, image_size, space.in_channels),
                              repeats, warmup, seed, clock)


def latency_table(record: dict[str, Any]) -> tuple[float, np.ndarray]:
    """``(fixed, table float64[L, K])`` of a latency record."""
    return float(record["fixed"]), np.asarray(record["table"], np.float64)


def save_latency_table(record: dict[str, Any], path: str) -> None:
    """Writes a latency record as JSON."""
    from jaxnas import workdir as wd

    wd.write_text(path, json.dumps(record, indent=1) + "\n")


def load_latency_table(path: str, space: space_lib.ChainSpace | None = None,
                       num_classes: int | None = None,
                       image_size: int | None = None) -> dict[str, Any]:
    """Reads a latency record; ValueError when it is not one, or was measured for
    another space, class count or image size than the ones given."""
    from jaxnas import workdir as wd

    record = json.loads(wd.read_text(path))
    if not isinstance(record, dict) or record.get("format") != LATENCY_FORMAT:
        raise ValueError(f"{path} is not a latency table (expected format "
                         f"{LATENCY_FORMAT!r})")
    wanted = {"space": None if space is None else space.to_dict(),
              "num_classes": num_classes, "image_size": image_size}
    for key, want in wanted.items():
        if want is not None and record.get(key) != want:
            raise ValueError(f"the latency table {path} was measured for {key}="
                             f"{record.get(key)!r}, not for {key}={want!r}: measure "
                             f"one for this space (jaxnas latency)")
    table = np.asarray(record["table"], np.float64)
    layers = sum(record["space"]["depths"])
    if table.shape != (layers, len(space_lib.CHOICES)) or not np.all(table > 0):
        raise ValueError(f"{path}: the table must be positive of shape "
                         f"({layers}, {len(space_lib.CHOICES)}), got {table.shape}")
    return record


def config_table(section: Any, space: space_lib.ChainSpace, num_classes: int,
                 image_size: int) -> tuple[float, np.ndarray]:
    """``(fixed, table)`` a config's ``hardware`` section names: ``cost`` "params",
    "macs", or "latency" with the JSON file ``latency_table`` (refused when measured
    for another space or input, `load_latency_table`)."""
    if section.cost == "params":
        fixed, table = space_lib.param_table(space, num_classes)
        return float(fixed), np.asarray(table, np.float64)
    if image_size is None:
        raise ValueError(f"config.hardware.cost={section.cost!r} needs the input size")
    if section.cost == "latency":
        record = load_latency_table(section.latency_table, space, num_classes,
                                    image_size)
        return latency_table(record)
    fixed, table = chain_tables(space, num_classes, image_size)[section.cost]
    return float(fixed), np.asarray(table, np.float64)
