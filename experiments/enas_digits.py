"""ENAS on the digits chain space: shared weights on controller-sampled paths.

Run:
  jaxnas search --config experiments/enas_digits.py --workdir runs/enas_digits

The chain supernet of experiments/spos_digits.py (6 searchable layers of 6 inverted-
residual blocks, 8x8x1 digits split 50/50 into a weight-training half and a controller
half), trained by ENAS (jaxnas.strategies.enas): every step the LSTM controller
samples 8 paths, the first trains the shared weights one SGD step (lr 0.05, constant),
and the 8 paths' accuracies on a validation batch reward the controller (REINFORCE,
Adam 0.0035, entropy 1e-4, baseline decay 0.99; ENAS' values). 20 epochs (220 steps).
Every epoch the controller's most likely path is evaluated on the whole validation
half (running statistics); genotype.json holds it, retrainable with
experiments/train_chain_digits.py.

Measured (seed 0, 2 CPU cores shared with other jobs, load 15): 37 s to the end of the
first step (compilation included), 0.43 s a step, about 3 minutes in all. The
controller concentrates fast: the most likely path's probability rises from 2e-5
(uniform: 6^-6) to 0.25 at step 121 and ends at 0.10; its validation accuracy with
the shared weights climbs 0.10-0.18 (steps 11-66) -> 0.60 (110) -> 0.89 (220), with
the mean reward 0.91 at the end. The path it settles on, [k7 e6, k7 e3, k3 e6, k7 e3,
k5 e6, k7 e6] (34,586 parameters), is also what the shared weights were trained on
most: 105-164 of the 220 steps for four of its six layers' choices (per-choice counts
in genotype.json) -- ENAS' rich-get-richer coupling of sampling and training, which
this run shows and does not correct. No retraining or random baseline yet.
Results: experiments/results/enas_digits/.
"""

import ml_collections

from experiments import spos_digits


def get_config() -> ml_collections.ConfigDict:
    base = spos_digits.get_config()
    config = ml_collections.ConfigDict()
    config.method = "enas"
    config.seed = 0
    config.epochs = 20
    config.num_steps = -1
    config.log_every = 10
    config.eval_every = 0           # steps between evaluations; 0 = every epoch
    config.checkpoint_every = 50
    config.keep_checkpoints = 3
    config.data = base.data
    config.model = base.model
    del config.model["dispatch"]    # the gather supernet (one block a layer)
    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 0.05
    config.optim.momentum = 0.9
    config.optim.weight_decay = 4e-5
    config.optim.grad_clip = 5.0

    config.enas = ml_collections.ConfigDict()
    config.enas.controller = "lstm"        # or "factorised"
    config.enas.controller_batch = 8
    config.enas.controller_lr = 0.0035
    config.enas.entropy_weight = 1e-4
    config.enas.baseline_decay = 0.99
    return config
