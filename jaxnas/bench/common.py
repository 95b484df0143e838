"""What the suites share: devices and data placement, synthetic batches."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

DATA_AXIS = "data"


class Placement:
    """The devices a measurement runs on, and how its inputs are laid out there.

    One device: everything on it (committed, as the search loops place their state).
    Several: a 1-D ``'data'`` mesh; the state is replicated, the batch axis of the
    data is sharded over the mesh (`jax.sharding.NamedSharding`), and XLA's SPMD
    partitioner splits the same jitted step (BatchNorm statistics and gradients
    become cross-device reductions).
    """

    def __init__(self, num_devices: int):
        available = jax.devices()
        if num_devices < 1 or num_devices > len(available):
            raise ValueError(f"--devices {num_devices}: this process sees {len(available)} "
                             f"{available[0].platform} device(s)")
        self.devices = available[:num_devices]
        self.mesh = (Mesh(np.asarray(self.devices), (DATA_AXIS,))
                     if num_devices > 1 else None)

    def replicated(self, tree: Any) -> Any:
        if self.mesh is None:
            return jax.device_put(tree, SingleDeviceSharding(self.devices[0]))
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def batch(self, tree: Any, axis: int = 0) -> Any:
        """`tree` with axis `axis` of every leaf sharded over the devices."""
        if self.mesh is None:
            return self.replicated(tree)
        n = len(self.devices)

        def put(x: Any) -> Any:
            if x.shape[axis] % n:
                raise ValueError(f"a batch axis of {x.shape[axis]} does not split over "
                                 f"{n} devices: choose --batch as a multiple of --devices")
            spec = PartitionSpec(*([None] * axis + [DATA_AXIS]))
            return jax.device_put(x, NamedSharding(self.mesh, spec))

        return jax.tree.map(put, tree)


def synthetic_batch(seed: int, batch: int, image: int, channels: int, num_classes: int,
                    lead: tuple[int, ...] = ()) -> dict[str, jax.Array]:
    """Normal images and uniform labels (the cost of a step does not depend on them)."""
    rng = np.random.default_rng(seed)
    shape = lead + (batch, image, image, channels)
    return {"image": jnp.asarray(rng.standard_normal(shape, np.float32)),
            "label": jnp.asarray(rng.integers(0, num_classes, lead + (batch,), np.int32))}


def param_count(tree: Any) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


class Case(NamedTuple):
    """One measurement, ready to run: the library function and its placed arguments.

    ``state_out``: None for a pure function called again on the same arguments; else
    argument 0 is a state that is donated and replaced by the call's output (the
    whole output when ``state_out == "all"``, its first element when ``"first"``).
    ``rates(record)`` gives the record's throughput fields (images_per_s, ...).
    """

    fn: Callable
    args: tuple
    items: float
    devices: Sequence[Any]
    config: dict
    rates: Callable[[dict], dict]
    state_out: str | None = None


def measure_case(name: str, case: Case, repeats: int, warmup: int) -> dict[str, Any]:
    """`measure_step` of a case, as a complete record."""
    from jaxnas.bench.measure import measure_step

    def next_args(out: Any, call_args: tuple) -> tuple:
        state = out if case.state_out == "all" else out[0]
        return (state,) + tuple(call_args[1:])

    chain = None if case.state_out is None else next_args

    record = measure_step(case.fn, case.args, repeats=repeats, warmup=warmup,
                          items=case.items, donate_argnums=(0,) if chain else (),
                          chain=chain, devices=case.devices)
    record.update(name=name, config=case.config)
    if record.get("error"):
        record.update({k: None for k in case.rates({"items_per_s": 1.0, "step_s": 1.0})})
    else:
        record.update(case.rates(record))
    if len(case.devices) > 1:
        record["flops_scope"] = "per_device"
    return record
