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


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.epochs = 15
    config.num_steps = -1           # > 0: stop after this many steps (same schedule)
    config.log_every = 10           # steps between metrics.jsonl records
    config.eval_every = 1           # epochs between test passes; 0 = only at the end
    config.checkpoint_every = 100   # steps between checkpoints (and one at the end)
    config.keep_checkpoints = 3

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "digits"
    config.data.data_dir = ""       # "" = $JAXNAS_DATA_DIR or ~/.cache/jaxnas/...
    config.data.batch_size = 64
    config.data.eval_batch_size = 0  # 0 = data.batch_size
    config.data.crop_padding = 1
    config.data.flip = False        # a mirrored digit is another symbol
    config.data.cutout = 0

    config.model = ml_collections.ConfigDict()
    config.model.bn_momentum = 0.9  # flax convention: new = m * old + (1 - m) * batch

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 0.1
    config.optim.lr_min = 0.0       # cosine annealing per epoch, to lr_min
    config.optim.momentum = 0.9
    config.optim.weight_decay = 4e-5
    config.optim.grad_clip = 5.0
    return config
