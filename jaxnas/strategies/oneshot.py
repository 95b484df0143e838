"""One-shot search: SPOS and FairNAS supernet training, supernet fitness, evolution.

`spos(model, ...)` and `fairnas(model, ...)` return a `OneShotStrategy` of pure functions
over a `OneShotState` (weights, BatchNorm statistics, optimizer state, PRNG key,
per-(layer, choice) training counts):

* SPOS (Guo et al. 2020, arXiv:1904.00420): every step trains one single path drawn
  uniformly at random (each layer's choice uniform and independent), from a key split
  off the state's key.
* FairNAS strict fairness (Chu et al. 2019, arXiv:1907.01845): every step draws the
  m = K paths of `strict_fair_paths` (each layer's column a permutation of the K
  choices), computes their m gradients in **one** `jax.vmap` call (so a ``path``
  mesh axis can later spread them over devices) and sums them
  (`accumulate_fair_grads`), and applies **one** optimizer update.  The m paths share
  the step's batch (as in the paper's algorithm), or each gets its own when the batch
  has a leading m axis.  After every step each choice of
  every layer has been trained exactly once more: ``counts == step`` everywhere.

Optimizer: SGD with momentum and weight decay after global-norm clipping, as the
reference implementations.  The gradient of a step reaches only the chosen blocks;
as in the PyTorch references (SGD over all parameters after ``zero_grad``), momentum
and weight decay still move every parameter each step.

Supernet fitness (`path_accuracy`, `population_accuracy`, `supernet_fitness`): the
validation accuracy of a path with the shared weights, after recalibrating the
BatchNorm statistics for that path as SPOS does (the running statistics are reset
to the mean of the batch statistics over a few training batches, `recalibrate`).
The statistics a supernet accumulates during training mix many paths, so without
recalibration fitness is mostly noise.  A population of P paths is evaluated by one
jitted `vmap` (each member recalibrates its own copy of the statistics).

`derive(state, calib_images, val, key)` runs regularized evolution (or the random
search baseline) over the trained supernet with an optional parameter budget, and
returns the `EvolutionResult`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxnas.losses import accuracy, cross_entropy, eval_sums
from jaxnas.optim import as_schedule, init_key, weight_optimizer
from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import evolution as evo
from jaxnas.strategies.base import OneShotStrategy
from jaxnas.strategies.fairnas import accumulate_fair_grads, strict_fair_paths
from jaxnas.supernet.chain import ChainSupernet, merge_path_stats
from jaxnas.types import Array, Batch, Metrics, PyTree

Schedule = Callable[[Array], Array]


class OneShotState(struct.PyTreeNode):
    """Everything a SPOS / FairNAS supernet training carries between steps."""

    step: Array             # int32[]
    params: PyTree          # supernet weights
    batch_stats: PyTree     # BatchNorm running statistics (per choice in layers)
    opt_state: optax.OptState
    key: Array              # PRNG key; split once per step
    counts: Array           # int32[L, K]: times each choice of each layer trained


class EvolutionSettings(NamedTuple):
    """How `derive` searches the trained supernet."""

    method: str = "evolution"     # "evolution" (regularized) or "random"
    population_size: int = 16
    sample_size: int = 4
    num_cycles: int = 64          # children after the initial population
    batch_size: int = 8           # children evaluated per fitness call
    max_params: int = 0           # > 0: parameter budget of a path; 0: none


# ----------------------------------------------------------------------------------
# Path sampling (the optimizer is `jaxnas.optim.weight_optimizer`).


def uniform_path(key: Array, num_layers: int, num_choices: int) -> Array:
    """int32[L]: each layer's choice uniform over ``range(num_choices)`` (SPOS)."""
    return jax.random.randint(key, (num_layers,), 0, num_choices, jnp.int32)


# ----------------------------------------------------------------------------------
# Strategies.


def fair_paths(space: space_lib.ChainSpace) -> int:
    """K, the choices every layer offers: the m paths of one strictly fair FairNAS
    step (and the range SPOS draws each layer's choice from)."""
    counts = set(space.num_choices)
    if len(counts) != 1:  # strict fairness needs each layer's column a permutation
        raise ValueError(f"strictly fair paths need one choice count for every layer, "
                         f"got {space.num_choices}")
    return counts.pop()


def _strategy(model: ChainSupernet, fair: bool, learning_rate: Schedule | float,
              momentum: float, weight_decay: float, grad_clip: float,
              evolution: EvolutionSettings) -> OneShotStrategy:
    schedule = as_schedule(learning_rate)
    tx = weight_optimizer(schedule, momentum=momentum, weight_decay=weight_decay,
                          grad_clip=grad_clip)
    num_layers, num_choices = model.space.num_layers, fair_paths(model.space)
    check_settings(evolution)

    def init(key: Array, sample_images: Array) -> OneShotState:
        k_model, k_state = jax.random.split(key)
        path = jnp.zeros((num_layers,), jnp.int32)
        variables = model.init(init_key(k_model), sample_images, path, train=True)
        params = variables["params"]
        return OneShotState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=variables["batch_stats"],
                            opt_state=tx.init(params), key=k_state,
                            counts=jnp.zeros((num_layers, num_choices), jnp.int32))

    def loss_fn(params: PyTree, path: Array, batch_stats: PyTree, batch: Batch
                ) -> tuple[Array, tuple[Array, PyTree]]:
        logits, upd = model.apply({"params": params, "batch_stats": batch_stats},
                                  batch["image"], path, train=True,
                                  mutable=["batch_stats"])
        return cross_entropy(logits, batch["label"]), (logits, upd["batch_stats"])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(state: OneShotState, key: Array, grads: PyTree, batch_stats: PyTree,
               hits: Array, loss: Array, train_accuracy: Array
               ) -> tuple[OneShotState, Metrics]:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": loss, "train_accuracy": train_accuracy,
                   "lr": schedule(state.step), "grad_norm": optax.tree.norm(grads)}
        return state.replace(step=state.step + 1, params=params,
                             batch_stats=batch_stats, opt_state=opt_state, key=key,
                             counts=state.counts + hits), metrics

    def spos_step(state: OneShotState, batch: Batch) -> tuple[OneShotState, Metrics]:
        """One SPOS step: a uniform single path on ``batch``."""
        key, k_path = jax.random.split(state.key)
        path = uniform_path(k_path, num_layers, num_choices)
        (loss, (logits, stats)), grads = grad_fn(state.params, path, state.batch_stats,
                                                 batch)
        hits = jax.nn.one_hot(path, num_choices, dtype=jnp.int32)
        return update(state, key, grads, stats, hits, loss,
                      accuracy(logits, batch["label"]))

    def fair_step(state: OneShotState, batch: Batch) -> tuple[OneShotState, Metrics]:
        """One FairNAS step: m strictly fair paths, one vmapped gradient call, one
        update.  ``batch["image"]`` is [N, H, W, C] (shared by the paths) or
        [m, N, H, W, C] (one batch per path)."""
        key, k_paths = jax.random.split(state.key)
        paths = strict_fair_paths(k_paths, num_layers, num_choices)
        per_path = jnp.ndim(batch["image"]) == 5
        if per_path and batch["image"].shape[0] != num_choices:
            raise ValueError(f"per-path batches need a leading axis of {num_choices} "
                             f"(one per path), got {batch['image'].shape}")
        (losses, (logits, stats)), grads = accumulate_fair_grads(
            loss_fn, state.params, paths, state.batch_stats, batch, has_aux=True,
            args_axes=(None, 0 if per_path else None))
        stats = merge_path_stats(state.batch_stats, stats, paths)
        labels = batch["label"]
        hits = jnp.sum(jax.nn.one_hot(paths, num_choices, dtype=jnp.int32), axis=0)
        return update(state, key, grads, stats, hits, jnp.mean(losses),
                      accuracy(logits, labels if per_path else labels[None]))

    def evaluate(state: OneShotState, batch: Batch, path: Array) -> Metrics:
        """Summed loss, correct count and example count of one path on ``batch``
        with the running statistics (``batch["mask"]`` False rows do not count)."""
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                             batch["image"], path, train=False)
        return eval_sums(logits, batch)

    def derive(state: OneShotState, calib_images: Array, val: Batch,
               key: Array) -> evo.EvolutionResult:
        """Evolution (or random search) over the trained supernet; see `search`."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        fitness = supernet_fitness(model, variables, calib_images, val)
        return search(fitness, model.space, model.num_classes, evolution, key)

    return OneShotStrategy(init=init, step=fair_step if fair else spos_step,
                           derive=derive, evaluate=evaluate)


def spos(model: ChainSupernet, *, learning_rate: Schedule | float = 0.1,
         momentum: float = 0.9, weight_decay: float = 4e-5, grad_clip: float = 5.0,
         evolution: EvolutionSettings = EvolutionSettings()) -> OneShotStrategy:
    """Single Path One-Shot: one uniformly sampled path trained per step.

    ``step(state, batch) -> (state, metrics)``; see the module docstring.
    """
    return _strategy(model, False, learning_rate, momentum, weight_decay, grad_clip,
                     evolution)


def fairnas(model: ChainSupernet, *, learning_rate: Schedule | float = 0.1,
            momentum: float = 0.9, weight_decay: float = 4e-5, grad_clip: float = 5.0,
            evolution: EvolutionSettings = EvolutionSettings()) -> OneShotStrategy:
    """FairNAS strict fairness: m = K paths per step, summed gradients, one update.

    ``step(state, batch) -> (state, metrics)``; ``batch["image"]`` is shared by the
    paths ([N, H, W, C]) or per path ([m, N, H, W, C]).
    """
    return _strategy(model, True, learning_rate, momentum, weight_decay, grad_clip,
                     evolution)


# ----------------------------------------------------------------------------------
# Supernet-based fitness.


def recalibrate(model: ChainSupernet, variables: PyTree, path: Array,
                calib_images: Array) -> PyTree:
    """BatchNorm statistics for ``path``: the mean of its batch statistics.

    ``calib_images`` is float[B, N, H, W, C] (B training batches, no augmentation).
    In training mode every BatchNorm normalises with its batch statistics, so each
    layer's statistics on a batch are well defined for the path; their average over
    the B batches replaces the running statistics of the path's blocks (what SPOS'
    recalibration with a cumulative average computes).  Entries of unchosen blocks
    are left as they were.
    """
    calib = model.clone(bn_momentum=0.0)  # running <- batch statistics

    def one(total: PyTree, images: Array) -> tuple[PyTree, None]:
        _, upd = calib.apply(variables, images, path, train=True,
                             mutable=["batch_stats"])
        return jax.tree.map(jnp.add, total, upd["batch_stats"]), None

    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    total, _ = jax.lax.scan(one, zeros, calib_images)
    return jax.tree.map(lambda t: t / calib_images.shape[0], total)


def path_accuracy(model: ChainSupernet, variables: PyTree, path: Array,
                  calib_images: Array, val: Batch) -> Array:
    """Validation accuracy of one path with inherited weights, after recalibration.

    ``val``: ``{"image": float[B, N, H, W, C], "label": int32[B, N], "mask":
    bool[B, N]}`` (padded rows masked out).  Returns float32[].
    """
    stats = recalibrate(model, variables, path, calib_images)
    evaluated = {"params": variables["params"], "batch_stats": stats}

    def one(correct: Array, batch: tuple[Array, Array, Array]) -> tuple[Array, None]:
        images, labels, mask = batch
        logits = model.apply(evaluated, images, path, train=False)
        hit = (jnp.argmax(logits, -1) == labels) & mask
        return correct + jnp.sum(hit, dtype=jnp.float32), None

    correct, _ = jax.lax.scan(one, jnp.float32(0.0),
                              (val["image"], val["label"], val["mask"]))
    return correct / jnp.maximum(jnp.sum(val["mask"], dtype=jnp.float32), 1.0)


def population_accuracy(model: ChainSupernet, variables: PyTree, paths: Array,
                        calib_images: Array, val: Batch) -> Array:
    """float32[P]: `path_accuracy` of P paths (int32[P, L]) by one `vmap`."""
    return jax.vmap(lambda p: path_accuracy(model, variables, p, calib_images, val))(
        jnp.asarray(paths, jnp.int32))


def supernet_fitness(model: ChainSupernet, variables: PyTree, calib_images: Array,
                     val: Batch) -> evo.FitnessFn:
    """The evolution fitness ``int32[P, L] -> float32[P]`` of a trained supernet.

    A pure, jittable closure: the weights, calibration and validation arrays are
    captured (constants of the jitted evolution; fine for small data sets, keep
    ``val`` to a few thousand images for large ones).
    """
    variables = jax.tree.map(jnp.asarray, variables)
    calib_images = jnp.asarray(calib_images)
    val = {k: jnp.asarray(val[k]) for k in ("image", "label", "mask")}

    def fitness(paths: Array) -> Array:
        return population_accuracy(model, variables, paths, calib_images, val)

    return fitness


# ----------------------------------------------------------------------------------
# Parameter budget and the evolution over the supernet.


def param_count_fn(space: space_lib.ChainSpace, num_classes: int
                   ) -> Callable[[Array], Array]:
    """``int32[N, L] -> int32[N]``: exact parameter counts of paths (jittable)."""
    fixed, table = space_lib.param_table(space, num_classes)
    if fixed + table.max(axis=1).sum() >= 2 ** 31:
        raise ValueError("parameter counts of this space overflow int32")
    table = np.asarray(table, np.int32)
    layers = np.arange(space.num_layers)

    def count(paths: Array) -> Array:
        paths = jnp.asarray(paths, jnp.int32)
        return jnp.int32(fixed) + jnp.sum(jnp.asarray(table)[layers, paths], axis=-1,
                                          dtype=jnp.int32)

    return count


def param_budget(space: space_lib.ChainSpace, num_classes: int,
                 max_params: int) -> evo.ConstraintFn:
    """Feasibility ``int32[N, L] -> bool[N]``: at most ``max_params`` parameters."""
    count = param_count_fn(space, num_classes)
    fixed, table = space_lib.param_table(space, num_classes)
    smallest = int(fixed + table.min(axis=1).sum())
    if max_params < smallest:
        raise ValueError(f"max_params={max_params} is below the smallest path of the "
                         f"space ({smallest} parameters)")
    return lambda paths: count(paths) <= max_params


def check_settings(s: EvolutionSettings) -> None:
    """Raises ValueError naming a bad setting."""
    if s.method not in ("evolution", "random"):
        raise ValueError(f"evolution method {s.method!r}: expected 'evolution' or "
                         "'random'")
    if s.population_size < 1 or s.num_cycles < 0 or s.batch_size < 1:
        raise ValueError(f"need population_size >= 1, num_cycles >= 0, batch_size >= "
                         f"1, got {s}")
    if not 1 <= s.sample_size <= s.population_size:
        raise ValueError(f"need 1 <= sample_size <= population_size, got "
                         f"{s.sample_size} and {s.population_size}")
    if s.method == "evolution" and s.batch_size > s.population_size:
        raise ValueError(f"need batch_size <= population_size, got {s.batch_size} and "
                         f"{s.population_size}")


def search(fitness_fn: evo.FitnessFn, space: space_lib.ChainSpace, num_classes: int,
           settings: EvolutionSettings, key: Array) -> evo.EvolutionResult:
    """Regularized evolution, or the random-search baseline, over ``fitness_fn``.

    Both evaluate ``population_size + num_cycles`` paths, ``batch_size`` per call
    (evolution: the initial population in one call, then ``batch_size`` children
    per round).  With ``max_params > 0`` infeasible paths are rejected (resampled)
    or repaired as `regularized_evolution` documents, and never reported as best.
    """
    check_settings(settings)
    constraint = (param_budget(space, num_classes, settings.max_params)
                  if settings.max_params > 0 else None)
    if settings.method == "evolution":
        return evo.regularized_evolution(
            fitness_fn, space.num_choices, population_size=settings.population_size,
            sample_size=settings.sample_size, num_cycles=settings.num_cycles, key=key,
            batch_size=settings.batch_size, constraint_fn=constraint)
    return evo.random_search(
        fitness_fn, space.num_choices,
        num_samples=settings.population_size + settings.num_cycles, key=key,
        batch_size=settings.batch_size, constraint_fn=constraint)


def round_stats(fitness: Any, settings: EvolutionSettings) -> dict[str, list[float]]:
    """Per round: best and median of the population, and the best so far.

    Round 0 is the initial population (the first ``population_size`` evaluations);
    round r >= 1 adds ``batch_size`` more.  The population after ``n`` evaluations is
    the last ``population_size`` of them (aging; for random search the same sliding
    window).  Non-finite fitness (infeasible) is ignored in the medians.
    """
    f = np.asarray(fitness, np.float64)
    p, b = settings.population_size, settings.batch_size
    ends = list(range(min(p, len(f)), len(f), b)) + [len(f)]
    ends = sorted(set(ends))
    out: dict[str, list[float]] = {"round": [], "evaluations": [], "best": [],
                                   "median": [], "best_so_far": []}
    for r, n in enumerate(ends):
        window = f[max(0, n - p):n]
        window = window[np.isfinite(window)]
        seen = f[:n][np.isfinite(f[:n])]
        out["round"].append(r)
        out["evaluations"].append(int(n))
        out["best"].append(float(window.max()) if window.size else float("nan"))
        out["median"].append(float(np.median(window)) if window.size else float("nan"))
        out["best_so_far"].append(float(seen.max()) if seen.size else float("nan"))
    return out
