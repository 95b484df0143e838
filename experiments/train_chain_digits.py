"""Quick retraining of a SPOS / FairNAS chain path on the embedded digits.

Run (after a one-shot search, e.g. experiments/fairnas_digits.py):
  jaxnas train --genotype runs/fairnas_digits/genotype.json \
      --config experiments/train_chain_digits.py --workdir runs/train_chain_digits

The genotype file carries the whole chain space (widths, depths, strides) and the
path, so this config holds only the training recipe: the discrete network of the
path, trained from scratch on all 1500 training digits (8x8x1), batch 64, SGD
momentum 0.9, lr 0.1 cosine-annealed per epoch, weight decay 4e-5 (the SPOS/FairNAS
recipe, short), random crops, 15 epochs (345 steps); test accuracy on the 297 test
digits after every epoch, in DIR/result.json.
"""

import ml_collections

from experiments import train_digits


def get_config() -> ml_collections.ConfigDict:
    """train_digits.py's loop, data and cadence; the chain model and SPOS/FairNAS optim."""
    config = train_digits.get_config()
    config.epochs = 15
    config.data.cutout = 0

    config.model = ml_collections.ConfigDict()
    config.model.bn_momentum = 0.9  # flax convention: new = m * old + (1 - m) * batch

    config.optim.lr = 0.1
    config.optim.weight_decay = 4e-5
    return config
