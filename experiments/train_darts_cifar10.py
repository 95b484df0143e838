"""Retraining a DARTS cell on CIFAR-10 as in the paper (Liu et al. 2019, section 3.2).

Needs cifar10 prepared (array_record, or tfrecord with `pip install 'jaxnas[tf]'`) in a
TFDS data_dir; jaxnas never downloads. Run:
  jaxnas train --genotype DARTS_V2 --config experiments/train_darts_cifar10.py \
      --workdir runs/train_darts_v2 --config.data.data_dir=/path/to/tensorflow_datasets
A searched cell: --genotype runs/darts_cifar10/genotype.json.

NetworkCIFAR C=36, 20 cells, auxiliary head (weight 0.4) after cell 13, drop-path 0.2
(reached linearly over the epochs), cutout 16, random crop (padding 4) and flip, SGD
momentum 0.9, weight decay 3e-4, lr 0.025 cosine-annealed to 0 per epoch, gradient-
norm clip 5, batch 96 for 600 epochs on all 50,000 training images (520 steps an
epoch; the 80 images a shuffled epoch leaves over are skipped, where the reference
runs a short last batch). Expected for DARTS_V2: 3,349,342 parameters (3.3M in the
paper) and about 2.76 % test error (the paper: 2.76 +- 0.09 %); DARTS_V1 3.00 %. The
paper's run takes about 1.5 GPU-days.
"""

from experiments import train_digits


def get_config():
    config = train_digits.get_config()
    config.epochs = 600
    config.log_every = 50
    config.eval_every = 1
    config.checkpoint_every = 1000
    config.data.dataset = "cifar10"
    config.data.batch_size = 96
    config.data.crop_padding = 4
    config.data.flip = True
    config.data.cutout = 16
    config.model.channels = 36
    config.model.layers = 20
    config.model.auxiliary = True
    config.model.auxiliary_weight = 0.4
    config.model.drop_path_prob = 0.2
    config.optim.lr = 0.025
    config.optim.lr_min = 0.0
    config.optim.momentum = 0.9
    config.optim.weight_decay = 3e-4
    config.optim.grad_clip = 5.0
    return config
