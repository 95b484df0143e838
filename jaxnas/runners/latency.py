"""`jaxnas latency`: the per-op latency table of a config's chain space, measured on
this machine's device and written as JSON (`jaxnas.hardware.measure_latency_table`)."""

from __future__ import annotations

import logging
from typing import Any

import ml_collections

from jaxnas import hardware
from jaxnas.errors import ConfigError

log = logging.getLogger("jaxnas")


def run(config: ml_collections.ConfigDict, out: str, *, batch: int, repeats: int,
        warmup: int = 2, clock: str = "wall") -> dict[str, Any]:
    """Measures the table of the chain space ``config.model`` describes, at the image
    shape and class count of ``config.data.dataset``; writes it to ``out``."""
    from jaxnas.runners import train as train_runner
    from jaxnas.runners.oneshot import build_space

    if batch < 1 or repeats < 1:
        raise ValueError(f"--batch and --repeats must be at least 1, got {batch} and "
                         f"{repeats}")
    if "model" not in config or config.model.get("space", "chain") != "chain":
        raise ConfigError("config.model must describe a chain space (model.widths, "
                          "depths, strides, ...): latency tables are the chain space's")
    data = train_runner.load_data(config)
    height, width, channels = data.image_shape
    if height != width:
        raise ValueError(f"latency tables need square images, got {data.image_shape}")
    space = build_space(config, channels)
    impl = config.model.get("impl", "auto")
    log.info("measuring %d layers x %d choices + stem and head on %s, batch %d, "
             "median of %d", space.num_layers, len(hardware.space_lib.CHOICES),
             hardware.device_description()["device_kind"], batch, repeats)
    record = hardware.measure_latency_table(space, data.num_classes, height,
                                            batch=batch, repeats=repeats,
                                            warmup=warmup, impl=impl, clock=clock)
    record["dataset"] = data.name
    hardware.save_latency_table(record, out)
    fixed, table = hardware.latency_table(record)
    log.info("fixed %.3f ms; the cheapest path %.3f ms, the dearest %.3f ms; in %s",
             fixed, fixed + table.min(1).sum(), fixed + table.max(1).sum(), out)
    return record
