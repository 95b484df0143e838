"""Retraining's config rules (`jaxnas train`, `compare`): the loop's keys, the
recipe, and per space the keys of its discrete network (`Space.network` reads them)."""

from __future__ import annotations

from jaxnas import config as C
from jaxnas import methods

# Keys every retraining config has; any other key is refused (a search config given
# to `train` by mistake fails, naming its first foreign keys).
COMMON_RULES: dict[str, C.Rule] = {
    # the search loop's data and cadence keys, less the bilevel split of the data
    **{k: v for k, v in methods.LOOP_RULES.items() if k != "data.split_fraction"},
    "data.eval_batch_size": C.non_negative(int),
    "optim.lr": C.positive(),
    "optim.lr_min": C.non_negative(),
    "optim.momentum": C.in_range(0.0, 1.0, hi_open=True),
    "optim.weight_decay": C.non_negative(),
    "optim.grad_clip": C.positive(),
}


def _positive_int(what: str) -> C.Rule:
    """An int >= 1 (not 8.0, not True): flax wants integer widths and counts."""
    return C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  f"a positive integer ({what})")


# By space name: a DARTS network is sized by the config (channels, layers, auxiliary
# head, drop-path: `spaces.darts.DartsSpace.network` / `trainer_options`); a chain
# genotype carries its whole geometry, so its config sets only BatchNorm's momentum;
# an NB201 cell becomes TinyNetwork(C=channels, N=layers cells per stage:
# `spaces.nb201.NB201Space.network`), with no auxiliary head and no drop-path.
MODEL_RULES: dict[str, dict[str, C.Rule]] = {
    "darts": {
        "model.channels": C.positive(int),
        "model.layers": C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                               and v >= 3, "an integer >= 3 (two reduction cells at "
                               "1/3 and 2/3 depth)"),
        "model.auxiliary": methods.BOOL,
        "model.auxiliary_weight": C.non_negative(),
        "model.drop_path_prob": C.in_range(0.0, 1.0, hi_open=True),
    },
    "chain": {
        "model.bn_momentum": C.in_range(0.0, 1.0, hi_open=True),
    },
    "nb201": {
        "model.channels": _positive_int("C, the first stage's width"),
        "model.layers": _positive_int("N cells per stage"),
    },
}
EXAMPLE_CONFIGS = {"darts": "experiments/train_digits.py",
                   "chain": "experiments/train_chain_digits.py",
                   "nb201": "experiments/train_nb201_digits.py"}
