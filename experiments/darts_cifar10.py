"""DARTS search on CIFAR-10 as in the paper (Liu et al. 2019, section 3.1).

Needs cifar10 prepared (array_record, or tfrecord with `pip install 'jaxnas[tf]'`) in a
TFDS data_dir; jaxnas never downloads. Run:
  jaxnas search --config experiments/darts_cifar10.py --workdir runs/darts_cifar10 \
      --config.data.data_dir=/path/to/tensorflow_datasets
Second order: add --config.darts.estimator=darts_exact (or darts_fd, amended,
implicit_cg); costs per estimator are in benchmarks/README.md.

C=16, 8 cells, batch 64, 50 epochs over 25,000 + 25,000 images (390 steps an epoch).
Expected: the paper reports 2.76 +- 0.09 % test error for the retrained second-order
cell (3.00 % first order); the search takes about a GPU-day in the paper's setting.

Length and checkpoints: --config.num_steps=N stops after N steps (schedule unchanged);
--config.checkpoint_every=K (default 500) saves every K steps, at the end and on
SIGINT/SIGTERM; re-run the same command to resume. On several hosts see the README
("Many devices and many hosts"); batch 64 splits over 1, 2, 4, 8, 16, 32 or 64 devices.
"""

from experiments import darts_digits


def get_config():
    config = darts_digits.get_config()
    config.epochs = 50
    config.log_every = 50
    config.checkpoint_every = 500
    config.data.dataset = "cifar10"
    config.data.batch_size = 64
    config.data.crop_padding = 4
    config.data.flip = True
    config.model.channels = 16
    config.model.layers = 8
    config.optim.a_lr = 3e-4
    config.darts.warmup_epochs = 0  # the paper updates the alphas from the first step
    return config
