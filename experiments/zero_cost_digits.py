"""Zero-cost proxies against retrained accuracy on the embedded digits (chain space).

Run:
  jaxnas search --config experiments/zero_cost_digits.py --workdir runs/zero_cost_digits

24 uniformly random paths of the small chain space (6 searchable layers of 6
inverted-residual blocks, 8x8x1 input, widths 8/16/24, head 64) are scored at
initialisation by synflow, snip, grad_norm, NASWOT, jacov and fisher (`jaxnas.proxies`, on 64
training digits), then each is retrained from scratch on all 1500 training digits with
the chain retraining recipe of experiments/train_chain_digits.py, shortened to 5
epochs (115 steps of batch 64; the 15-epoch recipe reaches about 0.96-0.98, 5 epochs
about 0.95) so that the study fits a shared 2-core CPU: all 24 networks are trained
side by side by one vmapped step (jaxnas.runners.zero_cost). The results
(DIR/zero_cost.json) hold every path's scores, parameter count and test accuracy on
the 297 test digits, and the Kendall tau of each proxy and of the parameter count
(the baseline a proxy must beat) with that accuracy.

Measured, seed 0, on 2 CPU cores shared with four other jobs (load about 8): 16 minutes
in all (366 s to the end of the first step: proxy scoring and the vmapped step
compiled; then 4.1 s a step for the 24 paths together). Test accuracies 0.919-0.970
(mean 0.946). Kendall tau with test accuracy: synflow -0.24, snip +0.11, grad_norm
+0.14, NASWOT +0.14, jacov +0.15, parameter count -0.05; none is significant (every
p > 0.1): at 5 epochs on 297 test digits (one image = 0.0034) the accuracy ranking is
itself noisy. Results: experiments/results/zero_cost_digits.json. fisher, added
later, was measured by re-running both seeds (its taus and the conditions are in the
two results JSONs and the README's table).
"""

import ml_collections

from experiments import train_chain_digits


def get_config() -> ml_collections.ConfigDict:
    base = train_chain_digits.get_config()
    config = ml_collections.ConfigDict()
    config.method = "zero_cost"
    config.seed = 0
    config.epochs = 5
    config.num_steps = -1
    config.log_every = 10
    config.eval_every = 1           # epochs between test passes; 0 = only at the end
    config.checkpoint_every = 50
    config.keep_checkpoints = 2

    config.data = base.data
    config.data.split_fraction = 0.5  # not used: retraining takes the whole train split
    config.data.eval_batch_size = 300

    config.model = ml_collections.ConfigDict()   # jaxnas.spaces.chain.digits_space()
    config.model.stem_channels = 8
    config.model.widths = (8, 16, 24)
    config.model.depths = (2, 2, 2)
    config.model.strides = (1, 2, 2)
    config.model.head_channels = 64
    config.model.stem_stride = 1
    config.model.impl = "auto"
    config.model.bn_momentum = base.model.bn_momentum

    config.optim = base.optim

    config.zero_cost = ml_collections.ConfigDict()
    config.zero_cost.num_archs = 24
    config.zero_cost.proxies = ("synflow", "snip", "grad_norm", "naswot", "jacov",
                                 "fisher")
    config.zero_cost.proxy_batch = 64
    return config
