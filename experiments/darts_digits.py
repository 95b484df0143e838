"""DARTS search on the embedded digits data set: the README's default job.

Run:
  jaxnas search --config experiments/darts_digits.py --workdir runs/darts_digits

A small supernet (C=8, 5 cells) on the 8x8 scikit-learn digits (1500 train images split
50/50 into weight-training and architecture-validation halves, 297 test images), first-
order DARTS for 10 epochs of batch 64 (110 steps). Measured on 2 shared CPU cores:
5.4 min in all (about 2 min of it compiling; ~1 s a step), supernet validation
accuracy 0.968 (BatchNorm running statistics), a genotype in DIR/genotype.json.

Length and checkpoints: --config.num_steps=N stops after N steps (schedule of the full
run unchanged; re-run with a larger N, or -1, to continue); --config.checkpoint_every=K
saves every K steps (and at the end, and on SIGINT/SIGTERM), keeping the last
--config.keep_checkpoints. Devices: --config.mesh.data (default -1: all of them).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "darts"
    config.seed = 0
    config.epochs = 10
    config.num_steps = -1           # > 0: stop after this many steps (schedule unchanged)
    config.log_every = 10           # steps between metrics.jsonl records
    config.eval_every = 0           # steps between validation passes; 0 = every epoch
    config.checkpoint_every = 50    # steps between checkpoints (and one at the end)
    config.keep_checkpoints = 3

    # Device mesh (jaxnas.parallel): -1 = every device the other axes leave. Batches
    # are split on `data`; data.batch_size must be a multiple of its size.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "digits"
    config.data.data_dir = ""       # "" = $JAXNAS_DATA_DIR or ~/.cache/jaxnas/...
    config.data.batch_size = 64
    config.data.split_fraction = 0.5
    config.data.crop_padding = 1
    config.data.flip = False        # a mirrored digit is another symbol
    config.data.cutout = 0

    config.model = ml_collections.ConfigDict()
    config.model.channels = 8
    config.model.layers = 5
    config.model.steps = 4
    config.model.multiplier = 4
    config.model.stem_multiplier = 3
    config.model.mixed_op = "fused"
    config.model.impl = "auto"

    config.darts = ml_collections.ConfigDict()
    config.darts.estimator = "first_order"
    config.darts.unroll_momentum = False
    config.darts.fd_eps = 0.01
    config.darts.implicit_iters = 5
    config.darts.implicit_damping = 0.0
    config.darts.neumann_alpha = 0.01

    config.optim = ml_collections.ConfigDict()
    config.optim.w_lr = 0.025
    config.optim.w_lr_min = 0.001
    config.optim.w_momentum = 0.9
    config.optim.w_weight_decay = 3e-4
    config.optim.grad_clip = 5.0
    config.optim.a_lr = 3e-4 * 10   # 10x DARTS' rate: 110 steps instead of 39,000
    config.optim.a_b1 = 0.5
    config.optim.a_b2 = 0.999
    config.optim.a_weight_decay = 1e-3
    return config
