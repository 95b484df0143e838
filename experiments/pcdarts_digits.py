"""PC-DARTS search on the embedded digits: experiments/darts_digits.py's data, optimizers,
length and warm-up (15 of 30 epochs weights only, as PC-DARTS), with config.method =
"pcdarts": 1/K of every edge's channels through its mixed op (K =
pcdarts.partial_channels = 4, the rest bypassed and channel-shuffled) and edge
normalisation (a softmax over the edges into each node weighting each edge, in the forward
pass and in the derivation by alpha * beta; jaxnas.strategies.pcdarts).

Run:
  jaxnas search --config experiments/pcdarts_digits.py --workdir runs/pcdarts_digits

Partial channels exist in the loop formulation of the mixed op only (model.mixed_op =
"loop"); model.channels = 8 gives each mixed op 2 channels. Only a tiny end-to-end run
has been made (--config.num_steps=2 --config.model.channels=4 --config.model.layers=3
--config.model.steps=1 --config.model.multiplier=1 --config.data.batch_size=16
--config.darts.warmup_epochs=0: compile and first step 309 s on the shared 2-core CPU,
then 3 steps/s; genotype.json holds the alphas and the betas); the full search is not
measured yet. Memory and step time against DARTS: benchmarks/results/2026-12-01-family.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "pcdarts"
    config.model.mixed_op = "loop"  # the formulation with the channel split
    config.pcdarts = ml_collections.ConfigDict()
    config.pcdarts.partial_channels = 4
    return config
