"""GDAS search on the embedded digits: experiments/darts_digits.py's data, supernet,
optimizers, length and warm-up, with config.method = "gdas" and its own section.

Run:
  jaxnas search --config experiments/gdas_digits.py --workdir runs/gdas_digits

One hard Gumbel-softmax sample per edge and step (straight-through), the
temperature annealed linearly from gdas.tau_max = 10 to gdas.tau_min = 0.1 over the
search (jaxnas.strategies.gdas); genotype from the softmax of the alphas. With
--config.gdas.single_path=true --config.model.mixed_op=loop the supernet runs only each
edge's sampled op (`nn.switch`), as GDAS' own forward; evaluation then runs each edge's
op of largest softmax weight.
Only the tiny end-to-end check has been run (--config.num_steps=6
--config.model.channels=4 --config.model.layers=3); the full search is not measured yet.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "gdas"
    config.gdas = ml_collections.ConfigDict()
    config.gdas.tau_max = 10.0
    config.gdas.tau_min = 0.1
    # True: GDAS' single-path forward, each edge runs only its sampled op (needs
    # --config.model.mixed_op=loop): fewer FLOPs, but on the CPU the fused all-ops step
    # is faster (benchmarks/results/2026-12-02-family/notes.md)
    config.gdas.single_path = False
    # Early stop (jaxnas.strategies.early_stop), checked at each evaluation; 0 = off.
    # DARTS+: max_skips=2 (normal cell), or stable_epochs=k (op ranking unchanged);
    # RobustDARTS: eigen_ratio=0.75 over eigen_epochs evaluations (alpha-Hessian
    # eigenvalue on eigen_batch validation images; 224 Hessian-vector products each).
    config.early_stop = ml_collections.ConfigDict()
    config.early_stop.max_skips = 0
    config.early_stop.stable_epochs = 0
    config.early_stop.eigen_ratio = 0.0
    config.early_stop.eigen_epochs = 5
    config.early_stop.eigen_batch = 64
    return config
