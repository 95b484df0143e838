"""Quick retraining of a NAS-Bench-201 cell on the embedded digits.

Run:
  jaxnas train --config experiments/train_nb201_digits.py \
      --genotype '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|' \
      --workdir runs/train_nb201_digits

(a top CIFAR-10 cell of NB201's table; any arch string, or a genotype.json holding
one, works). NB201's TinyNetwork at C=8, N=1 (one cell per stage: widths 8, 16, 32,
joined by two stride-2 residual blocks, so 8x8 digits end at 2x2) trained from
scratch on all 1500 training digits (8x8x1), batch 64, SGD momentum 0.9, lr 0.1
cosine-annealed per epoch, weight decay 5e-4 (NB201's recipe, short), random crops,
8 epochs (184 steps); test accuracy on the 297 test digits after every epoch, in
DIR/result.json. Expected: test accuracy above 0.9 in about a minute on two CPU
cores, 79,634 parameters; the measured run is in
experiments/results/train_nb201_digits.json.
"""

import ml_collections

from experiments import train_digits


def get_config() -> ml_collections.ConfigDict:
    """train_digits.py's loop, data and cadence; the NB201 model and recipe."""
    config = train_digits.get_config()
    config.epochs = 8
    config.data.cutout = 0

    config.model = ml_collections.ConfigDict()
    config.model.channels = 8       # C: stages at C, 2C, 4C
    config.model.layers = 1         # N cells per stage

    config.optim.lr = 0.1
    config.optim.weight_decay = 5e-4
    return config
