"""ProxylessNAS on the digits chain space: two sampled paths per layer and the
expected-cost loss of a per-block table (parameters, MACs or a measured latency).

Run:
  jaxnas search --config experiments/proxyless_chain_digits.py --workdir runs/proxyless_chain

experiments/darts_chain_digits.py's space, data, length and cost section, searched by
ProxylessNAS (`config.method = "proxyless"`) with the paper's memory trick
(`proxyless.paths = "two"`): each half-step draws two blocks per layer without
replacement from softmax(alpha), one of them active with the pair's softmax; only those
two blocks run (`jaxnas.supernet.chain_mixed`), the estimator differentiates through
the pair's gates and, after each architecture update, the pair's alphas are shifted to
keep their total probability (`jaxnas.strategies.proxyless`). "all" instead: one
sampled block per layer, every block computed. The cost term is `config.hardware`'s
(`proxyless.cost` stays "none": its table is the DARTS cell ops'); a latency table
measured on this device:
  jaxnas latency --config experiments/proxyless_chain_digits.py --out lat.json
  ... --config.hardware.cost=latency --config.hardware.latency_table=lat.json
A sweep of the latency weight, each path retrained: experiments/results/
proxyless_chain_digits/notes.md.
"""

import ml_collections

from experiments import darts_chain_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_chain_digits.get_config()
    config.method = "proxyless"
    # one sampled path per step trains each block a sixth of the time, too slowly at
    # DARTS' 10 epochs and lr 0.025 (experiments/results/proxyless_chain_digits/notes.md),
    # so DARTS' 30 epochs (15 of warm-up) at the chain's one-shot lr (spos_digits: 0.2)
    config.epochs = 30
    config.darts.warmup_epochs = 15
    config.optim.w_lr = 0.2
    config.proxyless = ml_collections.ConfigDict()
    config.proxyless.cost = "none"        # the chain's cost is config.hardware's
    config.proxyless.cost_weight = 0.0
    config.proxyless.paths = "two"        # the paper's two sampled paths; or "all"
    return config
