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

Measured (seed 0, 40 epochs = 440 steps, the 2-core CPU shared with a test run for most
of it; 2.5 s a step, 111 s to the first): the shared weights sit on a plateau for about
180 steps (validation accuracy of the controller's most likely cell 0.12-0.21, as the
chain ENAS run's 70-step plateau, longer), then learn: 0.36 at step 220, 0.85 at 264,
0.92 at the end; the controller's most likely cells reach probability 0.40 (from 3e-22).
Its normal cell reads only the cell's first input (c_{k-2}) on all eight edges, the
choices it sampled most (300-351 of 440 steps): ENAS' rich-get-richer coupling again.
10 epochs end inside the plateau (0.14; also with lr 0.01). No retraining yet. Results:
experiments/results/enas_cells_digits/.
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
