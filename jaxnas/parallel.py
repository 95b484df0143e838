"""Device meshes, shardings and multi-process helpers for the search loops.

Parallelism in jaxnas is a sharding, not a second code path: a search loop jits
its strategy's ordinary step once, with `in_shardings`/`out_shardings` built here,
and XLA (GSPMD) partitions it over a `jax.sharding.Mesh`:

* ``data``: the leading batch axis of every batch (data parallelism; BatchNorm
  statistics and losses become cross-device means);
* ``path``: FairNAS' m strictly fair paths of a step (their vmapped gradients are
  computed on different devices and summed);
* ``pop``: members of a population evaluated together (the evolution's fitness
  calls, the periodic evaluation of fixed paths).

The search state (weights, architecture, optimizer states, PRNG key) is replicated.
With one device the mesh has one device and the same code runs unchanged. Results
depend on the mesh only through the order of floating-point reductions.

Config keys (section ``mesh``; missing keys mean 1, ``-1`` means "every device
the other axes leave"): ``mesh.data`` (default -1), ``mesh.path``, ``mesh.pop``.

Multi-process (multi-host) runs: `initialize_distributed` starts
`jax.distributed`; the mesh then spans every process's devices, each process
feeds only the rows of a global batch that its own devices hold
(`process_rows`, `global_batch`), and `host` turns replicated global arrays into
numpy on every process.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxnas import config as config_lib

log = logging.getLogger("jaxnas")

AXES = ("data", "path", "pop")
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


# ----------------------------------------------------------------------------------
# Mesh shape (pure: testable without devices).


def mesh_sizes(config: Any) -> dict[str, int]:
    """The ``mesh.*`` sizes a config asks for (-1 = the rest; missing = 1, data -1)."""
    mesh = None
    if config is not None:
        try:
            mesh = config.get("mesh") if hasattr(config, "get") else None
        except (KeyError, AttributeError):
            mesh = None
    sizes = {"data": -1, "path": 1, "pop": 1}
    if mesh is not None:
        for axis in AXES:
            if axis in mesh:
                sizes[axis] = mesh[axis]
    return sizes


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Resolves ``{axis: size or -1}`` against ``num_devices``; ConfigError if it
    cannot be done (naming the keys and values)."""
    sizes = {axis: sizes.get(axis, 1) for axis in AXES}
    described = ", ".join(f"mesh.{a}={sizes[a]}" for a in AXES)
    bad = [a for a in AXES if not (isinstance(sizes[a], int) and not isinstance(
        sizes[a], bool) and (sizes[a] >= 1 or sizes[a] == -1))]
    if bad:
        raise config_lib.ConfigError(
            f"{', '.join(f'config.mesh.{a}={sizes[a]!r}' for a in bad)} is not allowed: "
            "expected a positive integer, or -1 for every device the other axes leave")
    rest = [a for a in AXES if sizes[a] == -1]
    if len(rest) > 1:
        raise config_lib.ConfigError(
            f"{described}: at most one mesh axis may be -1 (the rest of the devices)")
    fixed = math.prod(sizes[a] for a in AXES if sizes[a] != -1)
    if rest:
        if num_devices % fixed:
            raise config_lib.ConfigError(
                f"{described}: the fixed axes ({fixed} devices) do not divide the "
                f"{num_devices} devices")
        sizes[rest[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise config_lib.ConfigError(
            f"{described}: the mesh has {fixed} devices but {num_devices} are visible; "
            "set one axis to -1 or make the product equal the device count")
    return sizes


def make_mesh(config: Any = None, devices: Sequence[Any] | None = None):
    """The `jax.sharding.Mesh` a config asks for, over `devices` (default: all).

    Axes ``("data", "path", "pop")`` of Auto type (GSPMD partitions the steps);
    the default puts every visible device on ``data``. With several processes the
    outermost axis (``data``) spans the processes.
    """
    import jax

    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_sizes(config), len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    try:
        return jax.make_mesh(tuple(shape[a] for a in AXES), AXES, axis_types=auto,
                             devices=devices)
    except (ValueError, NotImplementedError):  # odd device sets: plain order
        grid = np.asarray(devices, dtype=object).reshape([shape[a] for a in AXES])
        return jax.sharding.Mesh(grid, AXES, axis_types=auto)


def describe(mesh) -> str:
    """``data=8 path=1 pop=1 over 8 cpu devices (1 process)`` (for logs)."""
    import jax

    shape = " ".join(f"{a}={mesh.shape[a]}" for a in mesh.axis_names)
    kind = mesh.devices.flat[0].platform
    return (f"{shape} over {mesh.devices.size} {kind} devices "
            f"({jax.process_count()} process{'es' if jax.process_count() > 1 else ''})")


# ----------------------------------------------------------------------------------
# Shardings.


def replicated(mesh):
    """Every device holds the whole array (the search state, metrics)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    return NamedSharding(mesh, P())


def batch_sharding(mesh, *, leading: Sequence[str | None] = (), batch_axis: str = "data"):
    """Arrays ``[*leading, batch, ...]``: the batch axis split on ``data``.

    ``leading=("path",)`` puts FairNAS' per-path batches [m, N, ...] on the
    ``path`` axis; ``leading=(None,)`` leaves a stacking axis (e.g. evaluation
    batches [B, N, ...]) unsplit.
    """
    from jax.sharding import NamedSharding, PartitionSpec as P

    return NamedSharding(mesh, P(*leading, batch_axis))


def axis_sharding(mesh, axis: str):
    """Arrays whose leading axis is split on the mesh axis ``axis`` (e.g. ``pop``)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    return NamedSharding(mesh, P(axis))


def constrain(sharding) -> Callable[[Any], Any]:
    """``x -> with_sharding_constraint(x, sharding)`` for use inside jitted code."""
    import jax

    def apply(tree):
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding),
                            tree)

    return apply


# ----------------------------------------------------------------------------------
# Divisibility checks (before anything compiles).


def check_divisible(mesh, sizes: Mapping[str, tuple[int, str]]) -> None:
    """Raises ConfigError unless every ``{config key: (value, mesh axis)}`` value is
    a multiple of its mesh axis (and, with several processes, splits evenly over
    the processes that feed it).

    Example: ``{"data.batch_size": (64, "data")}``.
    """
    problems = []
    for key, (value, axis) in sizes.items():
        n = mesh.shape[axis]
        if value % n:
            problems.append(
                f"config.{key}={value} does not divide evenly over the {n} devices of "
                f"mesh axis '{axis}' (config.mesh.{axis}); use a multiple of {n}")
            continue
        groups = process_groups(mesh, axis)
        if value % groups:
            problems.append(
                f"config.{key}={value} does not split over the {groups} processes "
                f"that feed mesh axis '{axis}'")
    if problems:
        raise config_lib.ConfigError("; ".join(problems))


def process_groups(mesh, axis: str) -> int:
    """Into how many process-local blocks the mesh axis ``axis`` is cut."""
    import jax

    if jax.process_count() == 1:
        return 1
    position = mesh.axis_names.index(axis)
    devices = np.moveaxis(mesh.devices, position, 0)
    blocks = set()
    for i in range(devices.shape[0]):
        procs = frozenset(d.process_index for d in devices[i].flat)
        if jax.process_index() in procs:
            blocks.add(i)
    local = len(blocks)
    return mesh.shape[axis] // max(local, 1)


# ----------------------------------------------------------------------------------
# Host <-> global arrays.


def local_block(sharding, global_shape: Sequence[int]) -> tuple[slice, ...]:
    """The block of a global array this process's devices hold, as slices.

    Raises ValueError when the process's shards do not form one contiguous block
    (a mesh laid out so that a process holds scattered rows).
    """
    index_map = sharding.addressable_devices_indices_map(tuple(global_shape))
    block = []
    for dim, size in enumerate(global_shape):
        spans = set()
        for index in index_map.values():
            s = index[dim] if index is not None and dim < len(index) else slice(None)
            start, stop, _ = s.indices(size)
            spans.add((start, stop))
        ordered = sorted(spans)
        if any(ordered[i][1] < ordered[i + 1][0] for i in range(len(ordered) - 1)):
            raise ValueError(f"this process's shards of an array {tuple(global_shape)} "
                             f"are not contiguous along axis {dim}: {ordered}")
        lo, hi = ordered[0][0], max(b for _, b in ordered)
        block.append(slice(lo, hi))
    return tuple(block)


def process_rows(sharding, global_shape: Sequence[int], axis: int = 0
                 ) -> tuple[int, int]:
    """``(index, count)``: this process feeds rows ``[index * n / count, (index + 1)
    * n / count)`` of axis ``axis`` (n = global_shape[axis]); the arguments a
    `jaxnas.data.BatchIterator` takes as ``process_index`` / ``process_count``."""
    block = local_block(sharding, global_shape)[axis]
    n = global_shape[axis]
    rows = block.stop - block.start
    if rows <= 0 or n % rows or block.start % rows:
        raise ValueError(f"rows {block.start}:{block.stop} of {n} are not an even "
                         "slice of the batch")
    return block.start // rows, n // rows


def global_batch(local: Any, sharding, global_shape_of: Callable[[np.ndarray],
                                                                 tuple[int, ...]]):
    """Global arrays from this process's slice of a batch (a pytree of numpy).

    ``global_shape_of(local_leaf)`` gives each leaf's global shape. With one
    process the local batch is the whole batch.
    """
    import jax

    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x),
                                                         global_shape_of(x)), local)


def scale_axis(axis: int, count: int) -> Callable[[np.ndarray], tuple[int, ...]]:
    """A ``global_shape_of`` for `global_batch`: axis ``axis`` is ``count`` times
    longer globally than locally."""

    def shape(x: np.ndarray) -> tuple[int, ...]:
        s = list(np.shape(x))
        s[axis] *= count
        return tuple(s)

    return shape


def put(tree: Any, sharding):
    """Host values that are identical on every process, as global arrays."""
    import jax

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, tree)


def host(tree: Any) -> Any:
    """Numpy copies of (replicated) arrays, readable on every process.

    A replicated array that spans other processes' devices cannot be fetched as a
    whole; every process reads its own local replica. Typed PRNG keys become their
    raw key data.
    """
    import jax

    def one(x):
        if isinstance(x, jax.Array):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                x = jax.random.key_data(x)
            if not x.is_fully_addressable:
                if not x.is_fully_replicated:
                    raise ValueError("host() needs replicated arrays; got one sharded "
                                     f"as {x.sharding}")
                return np.asarray(x.addressable_data(0))
            return np.asarray(x)
        return x

    return jax.tree.map(one, tree)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (one tiny collective)."""
    import jax

    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))
    return bool(np.any(flags))


def sync(name: str) -> None:
    """A barrier across processes (a no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------------
# jax.distributed.


def distributed_settings(*, coordinator: str | None = None,
                         num_processes: int | None = None,
                         process_id: int | None = None, auto: bool = False,
                         environ: Mapping[str, str] | None = None
                         ) -> dict[str, Any] | None:
    """The `jax.distributed.initialize` arguments asked for, or None for one process.

    Explicit values win over the environment (``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``). ``auto`` with nothing given means
    "let JAX detect the cluster" (TPU pods, SLURM, Open MPI): ``{}``.
    """
    env = os.environ if environ is None else environ
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None

    def number(value, name):
        if value is None:
            value = env.get(name)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise config_lib.ConfigError(f"{name}={value!r}: expected an integer") from None

    num_processes = number(num_processes, ENV_NUM_PROCESSES)
    process_id = number(process_id, ENV_PROCESS_ID)
    given = {k: v for k, v in (("coordinator_address", coordinator),
                               ("num_processes", num_processes),
                               ("process_id", process_id)) if v is not None}
    if not given:
        return {} if auto else None
    if not auto and len(given) < 3:
        missing = [flag for flag, key in (("--coordinator", "coordinator_address"),
                                          ("--num-processes", "num_processes"),
                                          ("--process-id", "process_id"))
                   if key not in given]
        raise config_lib.ConfigError(
            f"a multi-process run needs --coordinator, --num-processes and --process-id "
            f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing "
            f"{', '.join(missing)}. On TPU pods, SLURM or Open MPI pass --distributed "
            "alone to detect them.")
    if num_processes is not None and num_processes < 1:
        raise config_lib.ConfigError(f"--num-processes={num_processes}: expected >= 1")
    if (process_id is not None and num_processes is not None
            and not 0 <= process_id < num_processes):
        raise config_lib.ConfigError(f"--process-id={process_id}: expected 0 <= id < "
                                     f"--num-processes={num_processes}")
    return given


def initialize_distributed(settings: Mapping[str, Any] | None) -> None:
    """Starts `jax.distributed` with ``settings`` (None: single process, no-op)."""
    if settings is None:
        return
    import jax

    jax.distributed.initialize(**settings)
    if jax.process_index() == 0:
        log.info("jax.distributed: %d processes, %d local / %d global devices",
                 jax.process_count(), jax.local_device_count(), jax.device_count())
