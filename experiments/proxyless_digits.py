"""ProxylessNAS search on the embedded digits: experiments/darts_digits.py's data,
supernet, optimizers, length and warm-up, with config.method = "proxyless".

Run:
  jaxnas search --config experiments/proxyless_digits.py --workdir runs/proxyless_digits

Each half-step samples one op per edge from softmax(alpha) and feeds its one-hot gate
(binarised path): the weights train the sampled path, the alphas follow the paper's
estimator through the gates (jaxnas.strategies.proxyless). proxyless.cost = "params"
adds cost_weight * the expected parameter count of the cells' edges (in millions) to
the architecture objective; "none" leaves it out. The DARTS cell supernet still computes
every candidate (one-hot weights), so a step costs what a DARTS step costs.
proxyless.paths = "two" (with --config.model.mixed_op=loop) is the paper's memory
trick: two ops per edge drawn, only those run (experiments/proxyless_chain_digits.py
uses it on the chain space).
Only a tiny end-to-end run has been made (--config.num_steps=2 --config.model.channels=4
--config.model.layers=3 --config.model.steps=1 --config.model.multiplier=1
--config.data.batch_size=16 --config.darts.warmup_epochs=0: compile and first step 700 s
on the shared 2-core CPU); the full search and the cost weight's effect are not measured.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.method = "proxyless"
    config.proxyless = ml_collections.ConfigDict()
    config.proxyless.cost = "params"
    config.proxyless.cost_weight = 10.0  # a first guess: ~1e-3 on an edge alpha at C=8
    config.proxyless.paths = "all"       # one-path gates, every op computed; or "two"
    return config
