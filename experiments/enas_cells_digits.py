"""ENAS' cell search on the embedded digits: the DARTS search supernet (the README's
default DARTS job's: C=8, 5 cells, 4 nodes) trained on cells an LSTM controller samples
(per node two inputs and two ops), the controller rewarded by each sampled cell's
validation accuracy with the shared weights (`jaxnas.strategies.enas`,
`jaxnas.spaces.enas_cells`).

Run:
  jaxnas search --config experiments/enas_cells_digits.py --workdir runs/enas_cells
  jaxnas train --genotype runs/enas_cells/genotype.json --workdir runs/enas_cells_train

genotype.json holds the controller's most likely cells as a DARTS genotype, retrainable
like a DARTS result. Every step trains the full supernet on one sampled cell (the
stacked supernet computes every op; one-hot weights select) and scores
`enas.controller_batch` sampled cells on a validation batch.

A run of it, with its figures and what they show:
experiments/results/enas_cells_digits/notes.md.
"""

import ml_collections

from experiments import darts_digits, enas_digits


def get_config() -> ml_collections.ConfigDict:
    config = enas_digits.get_config()
    darts = darts_digits.get_config()
    config.data = darts.data
    config.model = darts.model
    config.model.space = "darts"      # ENAS' cells on the DARTS supernet
    config.epochs = 40                # 10 end on the shared weights' plateau
    config.optim.lr = 0.05
    return config
