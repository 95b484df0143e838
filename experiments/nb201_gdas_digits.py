"""GDAS on the NAS-Bench-201 cell space, on the embedded digits data set.

Run:
  jaxnas search --config experiments/nb201_gdas_digits.py --workdir runs/nb201_gdas

experiments/nb201_darts_digits.py's supernet, data and schedules (50 epochs, batch 64,
no warm-up) with GDAS' relaxation: one hard Gumbel-softmax sample per edge each step
(straight-through gradient), the temperature annealed linearly from 10 to 0.1 over the
search (NB201's GDAS: the same range); the cell is derived from the softmax of the
alphas. NB201 reports GDAS at 93.61 on CIFAR-10 where DARTS collapses to 54.30; what
the digits show of DARTS is in experiments/results/nb201_collapse/notes.md.

Measured (seed 0, shared 2-core CPU, about 6 minutes, 4 of them compiling): the
parameter-free share of the op weights rises 0.60 -> 0.82 (skip_connect 0.20 -> 0.45)
and the derived cell has no convolution,
|skip_connect~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|skip_connect~1|avg_pool_3x3~2|
(experiments/results/nb201_collapse/gdas_seed0/, notes.md): on the digits GDAS drifts
where DARTS does not.
"""

import ml_collections

from experiments import gdas_digits, nb201_darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = nb201_darts_digits.get_config()
    config.method = "gdas"
    gdas = gdas_digits.get_config()
    config.gdas = gdas.gdas
    config.early_stop = gdas.early_stop  # all criteria off (see gdas_digits.py)
    return config
