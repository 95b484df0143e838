"""DARTS on the digits chain space with ProxylessNAS' expected-cost loss.

Run:
  jaxnas search --config experiments/darts_chain_digits.py --workdir runs/darts_chain

The chain space of experiments/zero_cost_digits.py (6 searchable layers, each a soft
mixture of the six inverted-residual blocks, `jaxnas.supernet.chain_mixed`) searched by
first-order DARTS (experiments/darts_digits.py's recipe, 10 epochs, 5 of them warm-up)
with ``hardware.weight * sum_l sum_i softmax(alpha)_li * table_li`` added to the
architecture objective (`config.hardware`; the table is the
parameter count per block by default, weight 1e-5 a parameter). Any bilevel method
takes the section (`--config.method=gdas`, `fairdarts`, ...: the cost is taken under
that method's expected op weights). A measured table instead:
  jaxnas latency --config experiments/nsga2_digits.py --out lat.json
  ... --config.hardware.cost=latency --config.hardware.latency_table=lat.json
(weight then per millisecond). Drop the section (or weight 0) for plain DARTS.
Not yet measured: how far the weight moves the derived path towards small blocks.
"""

import ml_collections

from experiments import darts_digits, zero_cost_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.epochs = 10
    config.darts.warmup_epochs = 5
    chain = zero_cost_digits.get_config().model
    config.model = ml_collections.ConfigDict()
    config.model.space = "chain"
    for key in ("stem_channels", "widths", "depths", "strides", "head_channels",
                "stem_stride"):
        config.model[key] = chain[key]
    config.model.in_channels = 1          # the digits are 8x8x1

    config.hardware = ml_collections.ConfigDict()
    config.hardware.cost = "params"       # params, macs or latency
    config.hardware.latency_table = ""    # a `jaxnas latency` JSON when cost=latency
    config.hardware.weight = 1e-5         # per parameter: 0.01 per thousand
    return config
