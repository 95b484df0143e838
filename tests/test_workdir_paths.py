"""Workdir files on an object store: `jaxnas.workdir`'s path layer on a `gs://` URI,
served here by an in-memory fsspec file system standing in for GCS (no network). It
has what a bucket has and lacks: whole-object writes, no append, no rename, folders
that exist only while they hold objects. Local paths are what every other test uses."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from jaxnas import workdir as wd


@pytest.fixture
def fake_gcs():
    """`gs://` served by an in-memory store for this test (the epath backend's
    cached file systems cleared before and after)."""
    import importlib

    import fsspec
    from etils.epath import backend
    from fsspec.implementations.memory import MemoryFileSystem

    registry = importlib.import_module("fsspec.registry")  # the module, not the mapping

    class FakeGCS(MemoryFileSystem):
        protocol = ("gs", "gcs")
        root_marker = ""
        store: dict = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path):
            for prefix in ("gs://", "gcs://"):
                if path.startswith(prefix):
                    path = path[len(prefix):]
            return path.rstrip("/")

        def _open(self, path, mode="rb", **kwargs):
            if "a" in mode:
                raise NotImplementedError("a bucket has no append")
            return super()._open(path, mode, **kwargs)

        def mv(self, *args, **kwargs):
            raise NotImplementedError("a bucket has no rename")

        rename = mv

    saved = {k: registry._registry.get(k) for k in ("gs", "gcs")}
    for name in ("gs", "gcs"):
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    yield FakeGCS.store
    for name, cls in saved.items():
        if cls is None:
            registry._registry.pop(name, None)
        else:
            registry._registry[name] = cls
    backend.fsspec_backend._get_filesystem.cache_clear()


def _objects(store, prefix="bucket/run/"):
    return sorted(k[len(prefix):] for k in store if k.startswith(prefix))


def test_json_metrics_and_refusals_on_a_bucket(fake_gcs, tmp_path):
    run = wd.prepare_workdir("gs://bucket/run/")
    assert run == "gs://bucket/run" and wd.isdir(run)
    wd.write_json(run + "/config.json", {"lr": np.float32(0.5), "arr": np.arange(2)})
    assert wd.read_json(run + "/config.json") == {"lr": 0.5, "arr": [0, 1]}
    assert wd.isfile(run + "/config.json") and not wd.isfile(run + "/nothing.json")

    # metrics.jsonl: the bucket cannot append; its records equal a local writer's
    local = wd.MetricsWriter(str(tmp_path))
    remote = wd.MetricsWriter(run)
    for writer in (local, remote):
        for step in (1, 2, 3):
            writer.write(step, {"train_loss": np.float32(1.0 / step)})
        writer.truncate_after(2)  # a resume from step 2
        writer.write(3, {"train_loss": 9.0})
        writer.write(4, {"train_loss": float("nan")})
    strip = [[{k: v for k, v in r.items() if k != "time"} for r in w.read()]
             for w in (local, remote)]
    assert strip[0] == strip[1]
    assert [r["step"] for r in strip[1]] == [1, 2, 3, 4]
    assert strip[1][2]["train_loss"] == 9.0 and strip[1][3]["train_loss"] == "nan"
    # a second writer (a resumed session) continues the same file
    wd.MetricsWriter(run).write(5, {"train_loss": 1.0})
    assert [r["step"] for r in remote.read()] == [1, 2, 3, 4, 5]

    with pytest.raises(ValueError, match="is a file, not a directory"):
        wd.prepare_workdir(run + "/config.json")
    assert _objects(fake_gcs) == ["config.json", "metrics.jsonl"]


def test_plots_glob_and_moving_a_directory_on_a_bucket(fake_gcs):
    from jaxnas import plots

    run = wd.prepare_workdir("gs://bucket/run")
    weights = {"normal": np.random.default_rng(0).random((14, 8)),
               "reduce": np.random.default_rng(1).random((14, 8))}
    plots.arch_heatmap(weights, [f"op{i}" for i in range(8)], run + "/arch_weights.png")
    assert fake_gcs["bucket/run/arch_weights.png"].getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fake_gcs["bucket/run/arch_weights.pdf"].getvalue()[:5] == b"%PDF-"
    assert wd.glob(run, "arch_*") == [run + "/arch_weights.pdf",
                                     run + "/arch_weights.png"]

    # a checkpoint step moved aside (the quarantine of an unsound checkpoint): nested
    # files copied, the source gone, into a "folder" that did not exist before
    wd.write_text(run + "/checkpoints/7/state/_METADATA", "{}")
    wd.write_bytes(run + "/checkpoints/7/meta/meta.json", b"[1]")
    wd.move(run + "/checkpoints/7", run + "/checkpoints.corrupt/7-0")
    assert _objects(fake_gcs, "bucket/run/checkpoints") == [
        ".corrupt/7-0/meta/meta.json", ".corrupt/7-0/state/_METADATA"]
    assert wd.read_text(run + "/checkpoints.corrupt/7-0/meta/meta.json") == "[1]"


def test_a_genotype_and_a_latency_table_read_from_a_bucket(fake_gcs):
    from jaxnas import hardware, spaces
    from jaxnas.spaces import genotypes

    wd.write_json("gs://bucket/g.json", {"genotype": genotypes.to_json(
        genotypes.KNOWN_GENOTYPES["DARTS_V2"])})
    assert spaces.from_spec("gs://bucket/g.json") == genotypes.KNOWN_GENOTYPES["DARTS_V2"]
    wd.write_bytes("gs://bucket/bad.json", b"\x89PNG\x00\xff")
    with pytest.raises(ValueError, match="genotype file gs://bucket/bad.json"):
        spaces.from_spec("gs://bucket/bad.json")
    record = {"format": hardware.LATENCY_FORMAT, "fixed": 0.5}
    hardware.save_latency_table(record, "gs://bucket/latency.json")
    assert json.loads(fake_gcs["bucket/latency.json"].getvalue()) == record


def test_tensorboard_events_on_a_bucket_hold_the_logged_values(fake_gcs):
    from tensorboardX.proto.event_pb2 import Event

    from jaxnas import tensorboard

    run = wd.prepare_workdir("gs://bucket/run")
    events = tensorboard.EventWriter(run, start=0)
    for step in (1, 2, 3):
        events.write(step, {"train_loss": 1.0 / step, "val_accuracy": 0.25 * step})
    events.close()
    (name,) = [k for k in fake_gcs if "events.out.tfevents" in k]
    data, i, shown = fake_gcs[name].getvalue(), 0, {}
    while i < len(data):  # TFRecord framing: length, its CRC, an Event, its CRC
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            shown.setdefault(v.tag, {})[event.step] = v.simple_value
    assert shown["train/loss"] == {s: np.float32(1.0 / s) for s in (1, 2, 3)}
    assert shown["val/accuracy"] == {s: np.float32(0.25 * s) for s in (1, 2, 3)}
