"""FairNAS search on CIFAR-10 in the CIFAR-sized chain space, then evolution.

Needs cifar10 prepared (array_record, or tfrecord with `pip install 'jaxnas[tf]'`) in a
TFDS data_dir; jaxnas never downloads. Run:
  jaxnas search --config experiments/fairnas_cifar10.py --workdir runs/fairnas_cifar10 \
      --config.data.data_dir=/path/to/tensorflow_datasets

Space: jaxnas.spaces.chain.cifar_space() (stem 32, 16 searchable layers, widths
24/32/64/96/160/320, strides 1/2/2/1/2/1, head 1280). FairNAS with the 6 strictly fair
paths per step, 100 epochs of batch 96 over the 25,000 weight-training images, then
evolution (population 50, tournament 10, 500 children in rounds of 25) with fitness on
5,000 validation images and 10 recalibration batches per path.
Expected: a GPU job. On 2 CPU cores this supernet (13.1M stacked parameters) takes
9.5 s per FairNAS step at batch 16 (6 paths, 10 path-images/s; SPOS: 1.25 s, 13
images/s), so 26,000 steps of batch 96 are out of reach there. FairNAS reports its
ImageNet models, not CIFAR, so there is no published figure to match: expect the
chosen path to beat the mean random path's supernet accuracy (random_fitness_mean in
genotype.json) by a few points.

Length and checkpoints: --config.num_steps=N stops the supernet training after N steps;
--config.checkpoint_every=K (default 500) saves every K steps, at the end and on
SIGINT/SIGTERM. A GPU/TPU job: e.g. --config.mesh.data=-1 --config.mesh.path=2 on 8
devices (batch 96 splits over 4 data shards), or several hosts (README).
"""

from experiments import fairnas_digits


def get_config():
    config = fairnas_digits.get_config()
    config.epochs = 100
    config.log_every = 50
    config.checkpoint_every = 500
    config.data.dataset = "cifar10"
    config.data.batch_size = 96
    config.data.crop_padding = 4
    config.data.flip = True
    config.data.cutout = 0
    config.model.stem_channels = 32
    config.model.widths = (24, 32, 64, 96, 160, 320)
    config.model.depths = (2, 3, 4, 3, 3, 1)
    config.model.strides = (1, 2, 2, 1, 2, 1)
    config.model.head_channels = 1280
    config.optim.lr = 0.05
    config.oneshot.calib_batches = 10
    config.oneshot.eval_paths = 2
    config.oneshot.eval_batch_size = 500
    config.oneshot.val_examples = 5000
    config.evolution.population_size = 50
    config.evolution.sample_size = 10
    config.evolution.num_cycles = 500
    config.evolution.batch_size = 25
    return config
