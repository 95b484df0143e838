"""DARTS- search on the embedded digits: experiments/darts_digits.py's data, supernet,
optimizers, length and warm-up, with config.method = "darts_minus" and its own section.

Run:
  jaxnas search --config experiments/darts_minus_digits.py --workdir runs/darts_minus_digits

An auxiliary skip connection beta * x on every edge, beta decayed linearly from
darts_minus.beta_max = 1 to darts_minus.beta_min = 0 over the search (the op weights
plus beta on skip_connect; on stride-2 reduction edges that is the FactorizedReduce's
output); derivation from the plain softmax.
Only the tiny end-to-end check has been run (--config.num_steps=6
--config.model.channels=4 --config.model.layers=3); the full search is not measured yet.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "darts_minus"
    config.darts_minus = ml_collections.ConfigDict()
    config.darts_minus.beta_max = 1.0
    config.darts_minus.beta_min = 0.0
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
