"""DARTS on the NAS-Bench-201 cell space, on the embedded digits data set.

Run:
  jaxnas search --config experiments/nb201_darts_digits.py --workdir runs/nb201_darts

NB201's search network (`jaxnas.supernet.nb201`: stem, three stages of N=1 search cell
at C=8/16/32 with residual reduction blocks; one cell type, 6 edges x 5 ops, non-affine
cell BatchNorm as AutoDL's search) on the 8x8 scikit-learn digits (1500 train images
split 50/50 into weight-training and architecture-validation halves). DARTS as NB201
ran it: no warm-up, softmax op weights, SGD on the weights (lr 0.025 cosine to 0.001,
momentum 0.9, weight decay 3e-4), Adam on the alphas (b1 0.5, b2 0.999, weight decay
1e-3), 50 epochs of batch 64 (550 steps). The architecture rate is 1e-2 instead of
NB201's 3e-4: 550 updates instead of 19,550 (50 CIFAR epochs), about 36x fewer.
--config.darts.estimator=darts_exact gives second-order DARTS.

The derived cell (each edge's strongest op, `none` included, as NB201 derives it) is
printed as an NB201 arch string and written to DIR/genotype.json; op weights over time
are in DIR/metrics.jsonl ("arch_weights", f32[6, 5] per evaluation) and
DIR/arch_evolution.png.

Measured (seed 0, shared 2-core CPU, about 9 minutes, 5 of them compiling): supernet
validation accuracy 0.993, mean op weights none 0.188, skip 0.146, conv1x1 0.165,
conv3x3 0.280, avg_pool 0.220 (parameter-free share 0.61 -> 0.55: no collapse), cell
|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|avg_pool_3x3~2|.
Seed 1 and second order: experiments/results/nb201_collapse/notes.md.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "darts"
    config.seed = 0
    config.epochs = 50
    config.num_steps = -1           # > 0: stop after this many steps (schedule unchanged)
    config.log_every = 11           # steps between metrics.jsonl records
    config.eval_every = 0           # steps between validation passes; 0 = every epoch
    config.checkpoint_every = 110   # steps between checkpoints (and one at the end)
    config.keep_checkpoints = 2

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
    config.model.space = "nb201"
    config.model.channels = 8       # C (NB201: 16)
    config.model.layers = 1         # N cells per stage (NB201: 5)
    config.model.mixed_op = "loop"  # fastest measured on the CPU; or "fused", "scan"
    config.model.affine = False     # cell BatchNorm without scale/bias, as AutoDL

    config.darts = ml_collections.ConfigDict()
    config.darts.estimator = "first_order"
    config.darts.unroll_momentum = False
    config.darts.fd_eps = 0.01
    config.darts.implicit_iters = 5
    config.darts.implicit_damping = 0.0
    config.darts.neumann_alpha = 0.01
    config.darts.warmup_epochs = 0  # DARTS as NB201 ran it

    config.optim = ml_collections.ConfigDict()
    config.optim.w_lr = 0.025
    config.optim.w_lr_min = 0.001
    config.optim.w_momentum = 0.9
    config.optim.w_weight_decay = 3e-4
    config.optim.grad_clip = 5.0
    config.optim.a_lr = 1e-2
    config.optim.a_b1 = 0.5
    config.optim.a_b2 = 0.999
    config.optim.a_weight_decay = 1e-3
    return config
