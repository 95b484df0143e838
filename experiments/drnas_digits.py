"""DrNAS search on the embedded digits: experiments/darts_digits.py's data, supernet,
optimizers, length and warm-up, with config.method = "drnas" and its own section.

Run:
  jaxnas search --config experiments/drnas_digits.py --workdir runs/drnas_digits

Op weights a reparameterised sample of Dirichlet(elu(alpha) + 1) per step,
plus drnas.kl_weight = 1e-3 times the KL divergence to Dirichlet(drnas.anchor = 1) (the
paper's code's values); evaluation and derivation by the Dirichlet mean.
Only the tiny end-to-end check has been run (--config.num_steps=6
--config.model.channels=4 --config.model.layers=3); the full search is not measured yet.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "drnas"
    config.drnas = ml_collections.ConfigDict()
    config.drnas.kl_weight = 1e-3
    config.drnas.anchor = 1.0
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
