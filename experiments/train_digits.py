"""Quick retraining of a genotype on the embedded digits: the DARTS recipe, small.

Run:
  jaxnas train --genotype DARTS_V2 --config experiments/train_digits.py \
      --workdir runs/train_digits

NetworkCIFAR (C=8, 5 cells, auxiliary head 0.4, drop-path 0.2, cutout 2) trained from
scratch on all 1500 training digits (8x8x1), batch 64, 10 epochs (230 steps), then
tested on the 297 test digits after every epoch. Measured for DARTS_V2, seed 0, on 2
shared CPU cores: 59 s in all (the first step, compilation included, 23 s); test
accuracy 0.983 (292 of 297; 0.89 after 2 epochs, 0.97 after 5) in DIR/result.json.
36,586 parameters (455,668 with the auxiliary head, whose 768-channel conv dominates
at this width).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.epochs = 10
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
    config.data.cutout = 2

    config.model = ml_collections.ConfigDict()
    config.model.channels = 8
    config.model.layers = 5
    config.model.auxiliary = True
    config.model.auxiliary_weight = 0.4
    config.model.drop_path_prob = 0.2  # reached linearly: prob * epoch / epochs

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 0.025
    config.optim.lr_min = 0.0       # cosine annealing per epoch, to lr_min
    config.optim.momentum = 0.9
    config.optim.weight_decay = 3e-4
    config.optim.grad_clip = 5.0
    return config
