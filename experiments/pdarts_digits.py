"""P-DARTS search on the embedded digits: experiments/darts_digits.py's data, optimizers
and warm-up, with config.method = "pdarts": three stages of 5, 8 and 11 cells searching
8, 5 and 3 ops per edge, skip-connect dropout 0, 0.4 and 0.7, at most 2 skip-connects in
the final normal cell.

Run:
  jaxnas search --config experiments/pdarts_digits.py --workdir runs/pdarts_digits

Each stage is a DARTS search of `epochs` epochs (the first `darts.warmup_epochs` train
the weights only) with new weights and alphas, in DIR/stage_<s>/; between stages each
edge keeps the ops with the largest softmax weights (jaxnas.strategies.pdarts.prune).
DIR/pdarts.json records the stages, DIR/genotype.json the final genotype. The paper
(CIFAR-10) grows 5 -> 11 -> 17 cells with 25 epochs a stage; on the 8x8 digits the
stages are shallower (add_layers 0, 3, 6) so that the search stays a few minutes' work.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "pdarts"
    config.epochs = 20               # per stage
    config.darts.warmup_epochs = 10  # per stage (the paper: 10 of 25)
    # "fused" computes all 8 ops with weight 0 on the pruned ones; "loop" runs only the
    # kept ops but its per-op kernels are slower on the CPU (benchmarks/results/
    # 2026-12-02-family/notes.md); on an accelerator try "loop"
    config.model.mixed_op = "fused"
    config.pdarts = ml_collections.ConfigDict()
    config.pdarts.add_layers = (0, 3, 6)
    config.pdarts.num_ops = (8, 5, 3)
    config.pdarts.skip_dropout = (0.0, 0.4, 0.7)
    config.pdarts.max_skips = 2
    return config
