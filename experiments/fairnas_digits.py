"""FairNAS (strict fairness) search on the embedded digits, then evolution.

Run:
  jaxnas search --config experiments/fairnas_digits.py --workdir runs/fairnas_digits

The spos_digits.py space and evolution, but every supernet step trains the 6 paths of
a strictly fair draw (each choice of each layer exactly once) on the step's batch,
their gradients computed in one vmapped call, summed and applied in one update: 45
epochs of batch 32 (1,035 steps, 6,210 path updates; every choice trained 1,035 times).

Measured on 2 CPU cores shared with another search: 3.8 min in all (first step with
compilation 10 s, then 136 ms a step for the 6 paths; evolution 24 s). Chosen path
[5, 5, 4, 5, 0, 5] (k7e6 k7e6 k7e3 k7e6 k3e3 k7e6), 36,314 parameters, supernet
fitness 0.980 against 0.962 for the mean random path, test accuracy with inherited
weights 0.980; the same config and seed give the same path.

Does it beat random paths? `jaxnas compare --genotype DIR/genotype.json --config
experiments/train_chain_digits.py --workdir runs/fairnas_compare --random 8 --seeds
0,1,2,3,4` retrains it and 8 uniformly random paths from scratch (5 seeds each, 345
steps): test accuracy 0.9811 +- 0.0055 against 0.9763 for the mean random path (0.9724
to 0.9811), first of 9 (beats 7, ties 1); test loss 0.070 against 0.070 (one seed's
0.127; experiments/results/fairnas_digits_vs_random_seed0.json). 297 test images: one
image is 0.0034. With 15 epochs (345 steps) the supernet
is undertrained (fitness 0.90, test accuracy of the inherited weights 0.93) and its
pick, [4, 2, 3, 3, 4, 0], retrained to 0.9764 (5 seeds), below the mean of 8 other
random paths (0.9775).

Length and checkpoints: --config.num_steps=N and --config.checkpoint_every=K as in
spos_digits.py. Devices: --config.mesh.path=2, 3 or 6 spreads the 6 paths of a step.
"""

from experiments import spos_digits


def get_config():
    config = spos_digits.get_config()
    config.method = "fairnas"
    config.epochs = 45               # at 15 its pick retrained no better than random paths
    config.checkpoint_every = 50
    config.data.batch_size = 32     # 23 steps an epoch: the m paths share one update
    config.optim.lr = 0.1           # the summed gradient of 6 paths: half SPOS' rate
    config.fairnas = spos_digits.ml_collections.ConfigDict()
    config.fairnas.shared_batch = True  # False: one batch per path (6 a step)
    return config
