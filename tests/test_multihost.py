"""Two local processes joined by jax.distributed run one DARTS search.

Each process has 2 fake CPU devices, so the mesh is ``data=4`` over 2 processes:
every process feeds its half of each global batch, BatchNorm statistics, losses and
gradients are reduced across processes (gloo collectives on the CPU), only process 0
writes the results, and the checkpoints are written collectively into the shared
workdir. The final architecture parameters must equal those of a one-process,
one-device run of the same command within float tolerance: the two runs differ only
in the order of floating-point reductions (the cross-device sums of the batch means,
variances and gradients), which perturbs results at the 1e-7 relative level per
step; after 6 steps of Adam on the architecture parameters (step size 3e-3, values
~2e-2) the measured difference is 5e-8, and the tolerance allows 1e-5.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

CONFIG = "experiments/darts_digits.py"
# A tiny supernet (one intermediate node a cell, grouped convolutions): short compiles.
SMALL = ["--config.model.channels=4", "--config.model.layers=3",
         "--config.model.steps=1", "--config.model.multiplier=1",
         "--config.model.impl=lax", "--config.data.batch_size=16",
         "--config.log_every=2", "--config.eval_every=4",
         "--config.checkpoint_every=2", "--config.num_steps=6",
         "--config.darts.warmup_epochs=0"]  # the alphas move from the first step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data_dir, devices: int | None = None):
    env = dict(os.environ, JAXNAS_DATA_DIR=data_dir)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if devices:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    return env


def _command(workdir, *extra):
    return [sys.executable, "-m", "jaxnas", "search", "--config", CONFIG, "--workdir",
            str(workdir), *SMALL, *extra]


def test_two_processes_give_the_single_process_architecture(tmp_path, digits_data_dir):
    port = _free_port()
    multi = tmp_path / "multi"
    procs = [subprocess.Popen(
        _command(multi, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                 "--process-id", str(i)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(digits_data_dir, devices=2)) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=1200)
            outputs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (rc, out, err) in enumerate(outputs):
        assert rc == 0, f"process {i}:\n{err[-4000:]}"
    # only process 0 reports progress and results
    assert "step 6/6" in outputs[0][1] and "genotype:" in outputs[0][2]
    assert "step 6/6" not in outputs[1][1] and "genotype:" not in outputs[1][2]
    multi_result = json.load(open(multi / "genotype.json"))
    assert multi_result["processes"] == 2
    assert multi_result["mesh"] == {"data": 4, "path": 1, "pop": 1}
    assert sorted(int(s) for s in os.listdir(multi / "checkpoints")
                  if s.isdigit()) == [2, 4, 6]

    single = tmp_path / "single"
    proc = subprocess.run(_command(single), capture_output=True, text=True,
                          env=_env(digits_data_dir), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    single_result = json.load(open(single / "genotype.json"))
    assert single_result["processes"] == 1 and single_result["mesh"]["data"] == 1

    for cell in ("normal", "reduce"):
        a = np.asarray(single_result["arch"][cell])
        b = np.asarray(multi_result["arch"][cell])
        assert np.abs(a).max() > 1e-3  # the architecture did move
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    assert multi_result["genotype"] == single_result["genotype"]
