"""SPOS (single path one-shot) search on the embedded digits, then evolution.

Run:
  jaxnas search --config experiments/spos_digits.py --workdir runs/spos_digits

The small chain space (6 searchable layers of 6 inverted-residual choices each, 8x8x1
input, widths 8/16/24, head 64; 6^6 = 46,656 paths) trained on the 750-image weight
half of the digits for 50 epochs of batch 64 (550 steps, one uniformly sampled path
a step), then regularized evolution (population 16, tournament 4, 64 children in
rounds of 8) whose fitness is the validation accuracy (the other 750 images) of each
path with inherited weights and BatchNorm recalibrated per path on 4 training batches.

Measured on 2 shared CPU cores: 107 s in all (first step with compilation 17 s, then
37 ms a step; evolution 26 s, most of it compiling). Chosen path
[2, 5, 2, 4, 5, 5] (k5e3 k7e6 k5e3 k7e3 k7e6 k7e6), 35,810 parameters, supernet
fitness 0.861 against 0.803 for the mean random path (the initial population), test
accuracy with inherited weights 0.882. Results in DIR/genotype.json, DIR/evolution.png.

Length and checkpoints: --config.num_steps=N stops the supernet training after N steps
(schedule unchanged; the evolution then runs on that supernet); --config.checkpoint_every=K
saves every K steps, at the end of the training and on SIGINT/SIGTERM. Devices:
--config.mesh.data (default -1: all), --config.mesh.pop (population members).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "spos"
    config.seed = 0
    config.epochs = 50
    config.num_steps = -1           # > 0: stop after this many steps (same schedule)
    config.log_every = 10           # steps between metrics.jsonl records
    config.eval_every = 0           # steps between validation passes; 0 = every epoch
    config.checkpoint_every = 50    # steps between checkpoints (and one at the end)
    config.keep_checkpoints = 3

    # Device mesh (jaxnas.parallel): -1 = every device the other axes leave. Batches
    # are split on `data` (data.batch_size must be a multiple of its size; evaluation
    # batches are padded up to one), FairNAS' 6 paths of a step on `path` (1, 2, 3
    # or 6; FairNAS only), the evolution's population on `pop`.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.path = 1
    config.mesh.pop = 1

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "digits"
    config.data.data_dir = ""       # "" = $JAXNAS_DATA_DIR or ~/.cache/jaxnas/...
    config.data.batch_size = 64
    config.data.split_fraction = 0.5  # weight-training half / fitness half
    config.data.crop_padding = 1
    config.data.flip = False        # a mirrored digit is another symbol
    config.data.cutout = 0

    config.model = ml_collections.ConfigDict()   # jaxnas.spaces.chain.digits_space()
    config.model.stem_channels = 8
    config.model.widths = (8, 16, 24)
    config.model.depths = (2, 2, 2)
    config.model.strides = (1, 2, 2)
    config.model.head_channels = 64
    config.model.stem_stride = 1
    config.model.dispatch = "gather"  # "switch": lax.switch (single path only)
    config.model.impl = "auto"        # depthwise conv: auto, slices, taps, toeplitz, lax
    config.model.bn_momentum = 0.9

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 0.2           # cosine decay per step to lr_min
    config.optim.lr_min = 0.0
    config.optim.momentum = 0.9
    config.optim.weight_decay = 4e-5
    config.optim.grad_clip = 5.0

    config.oneshot = ml_collections.ConfigDict()
    config.oneshot.calib_batches = 4    # training batches recalibrating BN per path
    config.oneshot.eval_paths = 4       # fixed random paths evaluated every eval_every
    config.oneshot.eval_batch_size = 250
    config.oneshot.val_examples = 0     # validation images for fitness; 0 = all

    config.evolution = ml_collections.ConfigDict()
    config.evolution.method = "evolution"   # or "random" (the baseline)
    config.evolution.population_size = 16
    config.evolution.sample_size = 4
    config.evolution.num_cycles = 64
    config.evolution.batch_size = 8
    config.evolution.max_params = 0         # > 0: parameter budget of the path
    return config
