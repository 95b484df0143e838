"""TensorBoard event files beside metrics.jsonl: the loop's toy method (tests/test_loop.py,
seconds) run, killed and resumed; the event files, read back with their TFRecord framing
and TensorBoard's purge rule, hold exactly metrics.jsonl's numbers at its steps."""

from __future__ import annotations

import glob
import json
import os
import struct

import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog

import test_loop
from jaxnas import tensorboard

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
       "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")  # DARTS' columns, by hand


class Killed(RuntimeError):
    pass


class ToyWithArch(test_loop.Toy):
    """The toy method with DARTS-shaped op weights (2 cell types x 2 edges x 8 ops,
    a function of w) in its evaluations, and a kill switch before a given step."""

    def __init__(self, kill_before: int | None = None):
        self.kill_before = kill_before

    def build(self, config, mesh):
        plan = super().build(config, mesh)
        evaluate, batches, feed = plan.evaluate, plan.batches, plan.feeds["train"]

        def with_arch(state, step):
            w = np.asarray(state["w"], np.float64)
            logits = np.outer(np.arange(1, 5), np.resize(w, 8))  # 4 edges x 8 ops
            p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            return {**evaluate(state, step),
                    "arch_weights": {"normal": p[:2].round(6),  # arrays, as the
                                     "reduce": p[2:].round(6)}}  # DARTS runner's

        def maybe_killed():
            if self.kill_before is not None and feed.n + 1 == self.kill_before:
                raise Killed(f"killed before step {self.kill_before}")
            return batches()

        plan.evaluate, plan.batches = with_arch, maybe_killed
        return plan


def _config(**over):
    config = test_loop._config(**{"num_steps": 8, "log_every": 1, "eval_every": 3,
                                  "checkpoint_every": 2, **over})
    config.model = {"space": "darts"}  # a bilevel config: op names are DARTS'
    config.darts = {"estimator": "first_order"}
    return config


def _run(config, workdir, **kw):
    from jaxnas.runners import loop

    return loop.run(config, str(workdir), ToyWithArch(**kw))


def read_events(workdir) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} as TensorBoard shows it: files in name order, each record
    a uint64 length, its masked CRC, an Event proto, its CRC; a SessionLog.START at
    step s discards every earlier event at step >= s."""
    shown: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            if event.HasField("session_log") and \
                    event.session_log.status == SessionLog.START:
                for series in shown.values():
                    for step in [s for s in series if s >= event.step]:
                        del series[step]
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    shown.setdefault(value.tag, {})[event.step] = value.simple_value
        assert i == len(data)
    return {tag: series for tag, series in shown.items() if series}


def expected(workdir) -> dict[str, dict[int, float]]:
    """metrics.jsonl's numbers under the tags the module docstring promises, by hand."""
    out: dict[str, dict[int, float]] = {}
    edges = ("n0_from_c_k-2", "n0_from_c_k-1")
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        r = json.loads(line)
        values = {"train/loss": r["train_loss"], "train/accuracy": r["train_accuracy"]}
        if "val_error" in r:
            values["val/error"] = r["val_error"]
            for cell in ("normal", "reduce"):
                for e, edge in enumerate(edges):
                    for k, op in enumerate(OPS):
                        values[f"arch/{cell}/{edge}/{op}"] = r["arch_weights"][cell][e][k]
        for tag, v in values.items():
            out.setdefault(tag, {})[r["step"]] = float(np.float32(v))
    return out


def test_events_equal_metrics_and_a_resume_leaves_no_stale_points(tmp_path):
    whole = tmp_path / "whole"
    _run(_config(), whole)
    shown = read_events(whole)
    assert shown == expected(whole)
    assert sorted(shown["train/loss"]) == list(range(1, 9))
    assert sorted(shown["arch/normal/n0_from_c_k-1/sep_conv_3x3"]) == [3, 6, 8]

    # killed before step 6 (checkpoints at 2, 4; steps 1-5 logged), then resumed
    # logging every 2nd step: the killed session's step 5 must vanish
    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        _run(_config(), broken, kill_before=6)
    assert sorted(read_events(broken)["train/loss"]) == [1, 2, 3, 4, 5]
    _run(_config(log_every=2), broken)
    shown = read_events(broken)
    assert sorted(shown["train/loss"]) == [1, 2, 3, 4, 6, 8]  # 5 purged
    assert shown == expected(broken)
    # the resumed run computes what the whole run did: equal values at shared steps
    ref = read_events(whole)
    assert all(ref[tag][s] == v for tag, series in shown.items()
               for s, v in series.items())
    assert len(glob.glob(os.path.join(broken, "events.out.tfevents.*"))) == 2

    # one multi-line chart per edge in the Custom Scalars layout
    layouts = [v for path in glob.glob(os.path.join(whole, "events.out.tfevents.*"))
               for v in _summaries(path) if v.tag == "custom_scalars__config__"]
    assert len(layouts) == 1
    from tensorboardX.proto.layout_pb2 import Layout

    layout = Layout.FromString(layouts[0].tensor.string_val[0])
    charts = {(cat.title, c.title): list(c.multiline.tag) for cat in layout.category
              for c in cat.chart}
    assert len(charts) == 4
    assert charts["arch/reduce", "n0_from_c_k-1"] == [
        f"arch/reduce/n0_from_c_k-1/{op}" for op in OPS]
    assert sorted(cat.title for cat in layout.category) == ["arch/normal",
                                                            "arch/reduce"]


def _summaries(path):
    data, i = open(path, "rb").read(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        yield from Event.FromString(data[i + 12:i + 12 + n]).summary.value
        i += 12 + n + 4


def test_switched_off_writes_no_event_file(tmp_path):
    _run(_config(tensorboard=False, num_steps=2), tmp_path)
    assert os.path.exists(tmp_path / "metrics.jsonl")
    assert not glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))


def test_tags_and_flattening():
    assert [tensorboard.tag(k) for k in ("train_loss", "val_accuracy", "test_loss",
                                         "lr", "hypergrad_norm", "epoch")] == [
        "train/loss", "val/accuracy", "test/loss", "optim/lr", "optim/hypergrad_norm",
        "epoch"]
    s = tensorboard.scalars({"step": 3, "time": 1.0, "flag": True, "name": "x",
                             "study": {"cosine": {"first_order": 0.5}},
                             "arch_weights": [[0.25, 0.75]] * 6})  # NB201-shaped
    assert s == {"study/cosine/first_order": 0.5,
                 **{f"arch/cell/{e}/op{k}": w
                    for e in ("1_from_0", "2_from_0", "2_from_1", "3_from_0",
                              "3_from_1", "3_from_2")
                    for k, w in enumerate((0.25, 0.75))}}


def test_config_switch_is_a_loaded_default_and_validated(tmp_path):
    from jaxnas import config as C
    from jaxnas import methods

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = C.load_config(os.path.join(root, "experiments", "darts_digits.py"))
    assert config.tensorboard is True
    C.apply_overrides(config, ["tensorboard=false"])
    assert config.tensorboard is False and not tensorboard.enabled(config)
    methods.validate(config)
    with config.ignore_type():
        config.tensorboard = "yes"
    with pytest.raises(C.ConfigError, match=r"config.tensorboard='yes' is not allowed"):
        methods.validate(config)


@pytest.mark.slow
def test_a_tiny_darts_search_writes_its_op_weights(tmp_path, digits_data_dir):
    """The README's Python API search at test_api's tiny size (the same compiled
    programs): its event files hold metrics.jsonl's numbers, op weights under DARTS'
    op names and edges."""
    import test_api

    from jaxnas import config as C
    from jaxnas import search

    path = "experiments/darts_digits.py"
    cfg = C.load_config(os.path.join(test_api.ROOT, path))
    C.apply_overrides(cfg, [*test_api.TINY[path], "num_steps=20", "eval_every=10",
                            f"data.data_dir={digits_data_dir}"])
    search.run(cfg, str(tmp_path))
    shown = read_events(tmp_path)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert sorted(shown["train/loss"]) == [r["step"] for r in records]
    evals = [r for r in records if "arch_weights" in r]
    assert [r["step"] for r in evals] == [10, 20]
    for r in evals:
        for cell in ("normal", "reduce"):  # one node: edges from c[k-2] and c[k-1]
            for e, edge in enumerate(("n0_from_c_k-2", "n0_from_c_k-1")):
                for k, op in enumerate(OPS):
                    assert shown[f"arch/{cell}/{edge}/{op}"][r["step"]] == \
                        np.float32(r["arch_weights"][cell][e][k])
        assert shown["val/accuracy"][r["step"]] == np.float32(r["val_accuracy"])
        assert shown["optim/hypergrad_norm"][r["step"]] == np.float32(
            r["hypergrad_norm"])
