"""NSGA-II over the digits chain space: NASWOT at initialisation against parameters.

Run:
  jaxnas search --config experiments/nsga2_digits.py --workdir runs/nsga2_digits

The small chain space (6 searchable layers of 6 inverted-residual blocks, 8x8x1
input) is searched by NSGA-II (jaxnas.runners.proxy_search) maximising NASWOT
(Mellor et al. 2021, scored on 64 training digits by one freshly initialised
supernet, the path an input) and minimising the parameter count: 32 architectures a
generation, 20 generations (672 evaluations), no training. DIR/genotype.json holds the
Pareto front of every evaluation with both objectives (and which members the final
population holds), every evaluation, and the highest-NASWOT front member as
``genotype``; DIR/pareto.png/.pdf plots them.

Variants (same config):
  --config.hardware.cost=macs                    multiply-accumulates instead
  --config.hardware.cost=latency --config.hardware.latency_table=FILE
                                                 a table from `jaxnas latency --config
                                                 experiments/nsga2_digits.py --out FILE`
  --config.population.strategy=evolution --config.hardware.budget=20000
      regularized evolution (tournament 8, 4 children a round) of the best NASWOT
      under 20,000 parameters; over-budget children are resampled (Once-for-All).
Measured (seed 0, 2 CPU cores shared with other jobs, load about 12): 95 s to the end
of the first generation (compilation included), then 3.6 s a generation; NASWOT
532-574 over the 672 evaluations, parameters 14,666-40,394. The front has 18 distinct
architectures from 14,666 parameters (NASWOT 542.6, k3 e3 almost everywhere) to 29,570
(574.3, expansion 6 everywhere); all 18 are in the final population. Over every
evaluation NASWOT and the parameter count agree (Kendall tau +0.34): NASWOT prefers
wider blocks. Results: experiments/results/nsga2_digits/ (genotype.json, pareto.png).
NASWOT's tau with retrained accuracy on the digits was not significant
(experiments/results/zero_cost_digits*.json), so the front is a trade-off of the
proxy, not of accuracy.
"""

import ml_collections

from experiments import zero_cost_digits


def get_config() -> ml_collections.ConfigDict:
    base = zero_cost_digits.get_config()
    config = ml_collections.ConfigDict()
    config.method = "proxy_search"
    config.seed = 0
    config.epochs = 1               # unused: a step is one generation
    config.num_steps = -1           # > 0: stop after this many generations
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 5
    config.keep_checkpoints = 2
    config.data = base.data
    config.model = base.model

    config.population = ml_collections.ConfigDict()
    config.population.strategy = "nsga2"   # or "evolution"
    config.population.proxy = "naswot"
    config.population.proxy_batch = 64
    config.population.size = 32
    config.population.sample_size = 8      # evolution's tournament
    config.population.batch_size = 4       # evolution's children a round
    config.population.rounds = 20

    config.hardware = ml_collections.ConfigDict()
    config.hardware.cost = "params"        # params, macs or latency
    config.hardware.latency_table = ""     # a `jaxnas latency` JSON when cost=latency
    config.hardware.budget = 0.0           # > 0: evolution's budget in the cost's unit
    return config
