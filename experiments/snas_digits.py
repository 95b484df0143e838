"""SNAS search on the embedded digits: experiments/darts_digits.py's data, supernet,
optimizers, length and warm-up, with config.method = "snas" and its own section.

Run:
  jaxnas search --config experiments/snas_digits.py --workdir runs/snas_digits

A soft Gumbel-softmax sample per step, temperature snas.tau_max = 1 annealed
linearly to snas.tau_min = 0.03; weights and alphas descend the training loss together
in one step (single-level: the validation half is not read; darts.estimator unused).
Only the tiny end-to-end check has been run (--config.num_steps=6
--config.model.channels=4 --config.model.layers=3); the full search is not measured yet.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "snas"
    config.snas = ml_collections.ConfigDict()
    config.snas.tau_max = 1.0
    config.snas.tau_min = 0.03
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
