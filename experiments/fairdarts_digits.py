"""FairDARTS search on the embedded digits: experiments/darts_digits.py's data, supernet,
optimizers, length and warm-up, with config.method = "fairdarts" and its own section.

Run:
  jaxnas search --config experiments/fairdarts_digits.py --workdir runs/fairdarts_digits

Independent sigmoid op weights plus the zero-one loss
-w * mean((sigmoid(a) - 0.5)^2), w = fairdarts.zero_one_weight = 10 (the paper's).
Derivation: DARTS' top-2 rule on the sigmoid weights (two inputs per node, each with its
best non-none op), which NetworkCIFAR can build; the paper's threshold rule (keep every
op with sigmoid > 0.85) gives cells with other numbers of inputs than two, which the
discrete DARTS network does not build.
Only the tiny end-to-end check has been run (--config.num_steps=6
--config.model.channels=4 --config.model.layers=3); the full search is not measured yet.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "fairdarts"
    config.fairdarts = ml_collections.ConfigDict()
    config.fairdarts.zero_one_weight = 10.0
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
