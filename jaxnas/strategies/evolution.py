"""Regularized (aging) evolution (Real et al. 2019, arXiv:1802.01548) and random search.

Architectures are int32[L] vectors of per-layer choice indices; layer ``l`` has
``num_choices[l]`` choices.  The search is written as an evosax-style ask/tell pair
over an `EvolutionState` pytree:

* `init` samples the initial population (uniformly at random) into a fixed-size ring
  buffer whose slots are still unevaluated; the caller evaluates
  ``state.population`` and hands it back with ``tell`` (all ``P`` at once).
* `ask` runs ``B`` independent tournaments on the *current* population: each draws
  ``sample_size`` distinct members uniformly at random, the fittest is the parent, and
  the child is the parent with exactly one layer changed to a different choice
  (the layer is uniform over layers with more than one choice, the new choice uniform
  over that layer's other choices).
* `tell` appends the evaluated children in order and removes as many of the *oldest*
  members (aging), so the population is always the last ``P`` evaluated
  architectures.

``B = batch_size`` (default 1) is the batched variant: with ``B = 1`` this is exactly
the algorithm of Real et al.; with ``B > 1`` the ``B`` parents of a round are all
selected from the population as it was at the start of the round, the ``B`` children
are evaluated in one ``fitness_fn`` call, then they replace the ``B`` oldest members.

Constraints (e.g. a parameter budget): with ``constraint_fn: int32[N, L] -> bool[N]``
the initial population is rejection-sampled (infeasible rows are redrawn, for at most
``max_init_rounds`` rounds), and every child is chosen as the first feasible one among
``max_tries`` independent one-layer mutations of its parent (all checked in a single
batched ``constraint_fn`` call); if none is feasible the child is a clone of its
(feasible) parent.  `regularized_evolution` additionally gives any architecture that
is still infeasible a fitness of ``-inf``, so it can never be selected or reported
as best.

NaN fitness is treated as ``-inf`` for selection and for the best-so-far, so it never
wins; the history keeps the values as ``fitness_fn`` returned them (NaN included,
only infeasible architectures recorded as ``-inf``).

Everything is pure and jittable: `regularized_evolution` runs the whole search as one
`jax.jit` program (``fitness_fn`` is a static argument, traced once per batch shape;
arrays it closes over are baked in as constants).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxnas.types import Array

FitnessFn = Callable[[Array], Array]      # int32[N, L] -> float32[N]
ConstraintFn = Callable[[Array], Array]   # int32[N, L] -> bool[N]


class EvolutionState(struct.PyTreeNode):
    """Population ring buffer and best-so-far of a regularized evolution run.

    Slot ``head`` holds the oldest member; `tell` overwrites slots ``head, head+1,
    ...`` (mod ``P``) with the newest members, so the age order is the ring order
    starting at ``head``.  ``birth[i]`` is the evaluation index (position in the
    history) of the member in slot ``i`` (-1 for a not yet evaluated slot).
    """

    population: Array      # int32[P, L]
    fitness: Array         # float32[P]; NaN already mapped to -inf
    birth: Array           # int32[P]
    head: Array            # int32[]: slot of the oldest member
    num_evals: Array       # int32[]: architectures told so far
    best_arch: Array       # int32[L]: best architecture ever told
    best_fitness: Array    # float32[]: its fitness (-inf when none is finite)
    best_index: Array      # int32[]: its evaluation index (-1 before any tell)
    parents: Array         # int32[B]: evaluation indices of the last ask's parents
    num_choices: tuple[int, ...] = struct.field(pytree_node=False)
    sample_size: int = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)
    max_tries: int = struct.field(pytree_node=False)
    constraint_fn: Optional[ConstraintFn] = struct.field(pytree_node=False,
                                                         default=None)

    @property
    def population_size(self) -> int:
        """Number of members ``P``."""
        return self.population.shape[0]

    def by_age(self) -> tuple[Array, Array, Array]:
        """``(archs, fitness, birth)`` of the population ordered oldest first."""
        order = (self.head + jnp.arange(self.population_size)) % self.population_size
        return self.population[order], self.fitness[order], self.birth[order]


class History(NamedTuple):
    """Every evaluated architecture, in evaluation order."""

    archs: Array    # int32[N_total, L]
    fitness: Array  # float32[N_total], as returned by fitness_fn (NaN kept)


class EvolutionResult(NamedTuple):
    """Outcome of `regularized_evolution` or `random_search`."""

    best_arch: Array               # int32[L]: best architecture ever evaluated
    best_fitness: Array            # float32[]: its fitness (NaN counts as -inf)
    history: History               # every evaluation, in order
    parents: Array                 # int32[N_total]: history index of the parent, -1
    #                                for initial / randomly sampled architectures
    state: Optional[EvolutionState] = None  # final state (None for random search)


def _as_num_choices(num_choices: Sequence[int]) -> tuple[int, ...]:
    """Validate per-layer choice counts and return them as a hashable tuple."""
    if isinstance(num_choices, (int, np.integer)):
        raise TypeError("num_choices must be a sequence of per-layer choice counts "
                        f"(one int per layer), got the int {num_choices}")
    counts = tuple(int(n) for n in num_choices)
    if not counts or min(counts) < 1:
        raise ValueError(f"need >= 1 layer and >= 1 choice per layer, got {counts}")
    return counts


def _clean(fitness: Array) -> Array:
    """float32 fitness with NaN mapped to -inf (so NaN never wins)."""
    fitness = jnp.asarray(fitness, jnp.float32)
    return jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)


def _uniform_archs(key: Array, num_choices: tuple[int, ...], n: int) -> Array:
    """int32[n, L] architectures with each layer uniform over its choices."""
    maxval = jnp.asarray(num_choices, jnp.int32)
    return jax.random.randint(key, (n, len(num_choices)), 0, maxval, jnp.int32)


def _sample_feasible(key: Array, num_choices: tuple[int, ...], n: int,
                     constraint_fn: Optional[ConstraintFn],
                     max_rounds: int) -> Array:
    """Uniform architectures, infeasible rows redrawn for up to ``max_rounds``."""
    k0, key = jax.random.split(key)
    archs = _uniform_archs(k0, num_choices, n)
    if constraint_fn is None:
        return archs

    def cond(carry: tuple[Array, Array, Array]) -> Array:
        i, archs, _ = carry
        return (i < max_rounds) & ~jnp.all(constraint_fn(archs))

    def body(carry: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        i, archs, key = carry
        key, sub = jax.random.split(key)
        fresh = _uniform_archs(sub, num_choices, n)
        archs = jnp.where(constraint_fn(archs)[:, None], archs, fresh)
        return i + 1, archs, key

    _, archs, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), archs, key))
    return archs


def init(key: Array, num_choices: Sequence[int], *, population_size: int,
         sample_size: int, batch_size: Optional[int] = None,
         constraint_fn: Optional[ConstraintFn] = None, max_tries: int = 8,
         max_init_rounds: int = 256) -> EvolutionState:
    """Sample the initial population; it still has to be evaluated and told.

    Usage::

        state = init(key, num_choices, population_size=P, sample_size=S)
        state = tell(state, state.population, fitness_fn(state.population))
        children, state = ask(key1, state)
        state = tell(state, children, fitness_fn(children))

    Args:
      key: PRNG key.
      num_choices: per-layer choice counts (a sequence of ints, one per layer).
      population_size: ``P``.
      sample_size: tournament size ``S`` (1 <= S <= P).
      batch_size: children per `ask` ``B`` (1 <= B <= P); None means 1.
      constraint_fn: optional feasibility predicate int32[N, L] -> bool[N].
      max_tries: mutations tried per child when ``constraint_fn`` is given.
      max_init_rounds: redraw rounds for infeasible initial members.

    Returns:
      An `EvolutionState` whose slots hold the unevaluated initial population
      (fitness -inf, birth -1).
    """
    counts = _as_num_choices(num_choices)
    batch_size = 1 if batch_size is None else int(batch_size)
    if population_size < 1:
        raise ValueError(f"population_size must be >= 1, got {population_size}")
    if not 1 <= sample_size <= population_size:
        raise ValueError(f"need 1 <= sample_size <= population_size, got "
                         f"{sample_size} and {population_size}")
    if not 1 <= batch_size <= population_size:
        raise ValueError(f"need 1 <= batch_size <= population_size, got "
                         f"{batch_size} and {population_size}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    population = _sample_feasible(key, counts, population_size, constraint_fn,
                                  max_init_rounds)
    return EvolutionState(
        population=population,
        fitness=jnp.full((population_size,), -jnp.inf, jnp.float32),
        birth=jnp.full((population_size,), -1, jnp.int32),
        head=jnp.int32(0),
        num_evals=jnp.int32(0),
        best_arch=population[0],
        best_fitness=jnp.float32(-jnp.inf),
        best_index=jnp.int32(-1),
        parents=jnp.full((batch_size,), -1, jnp.int32),
        num_choices=counts,
        sample_size=int(sample_size),
        batch_size=batch_size,
        max_tries=int(max_tries),
        constraint_fn=constraint_fn,
    )


def ask(key: Array, state: EvolutionState) -> tuple[Array, EvolutionState]:
    """Propose ``state.batch_size`` children by tournament selection and mutation.

    Each child comes from its own tournament of ``sample_size`` distinct members
    drawn uniformly from the current population (the members with the largest of
    ``P`` i.i.d. uniforms); the parent is the fittest (NaN as -inf; ties broken
    uniformly at random).  The child is the parent with one layer, uniform over the
    layers with more than one choice, set to a choice uniform over that layer's
    other choices.  With ``constraint_fn``, ``max_tries`` such mutations are drawn
    per child and the first feasible one is kept (the parent itself if none is).

    Returns:
      ``(children, state)``: int32[B, L] children and the state with ``parents`` set
      to the evaluation indices (history positions) of their parents; nothing else
      changes until `tell`.
    """
    num_members, num_layers = state.population.shape
    batch = state.batch_size
    tries = 1 if state.constraint_fn is None else state.max_tries
    mutable = np.flatnonzero(np.asarray(state.num_choices) > 1)
    # one uniform draw per child: P for the tournament, T layers, T new values
    u = jax.random.uniform(key, (batch, num_members + 2 * tries))
    _, members = jax.lax.top_k(u[:, :num_members], state.sample_size)    # [B, S]
    winner = jnp.argmax(state.fitness[members], axis=1)
    slots = jnp.take_along_axis(members, winner[:, None], axis=1)[:, 0]  # [B]
    parents = state.population[slots]                                   # [B, L]
    if mutable.size == 0:  # nothing can change: children are clones
        return parents, state.replace(parents=state.birth[slots])

    u_layer = u[:, num_members:num_members + tries]                       # [B, T]
    u_value = u[:, num_members + tries:]                                  # [B, T]
    pick = jnp.minimum((u_layer * mutable.size).astype(jnp.int32),
                       mutable.size - 1)
    layer = jnp.asarray(mutable, jnp.int32)[pick]                         # [B, T]
    count = jnp.asarray(state.num_choices, jnp.int32)[layer]
    old = jnp.take_along_axis(parents, layer, axis=1)
    # uniform over the other count - 1 choices: draw in [0, count - 1), skip `old`
    new = jnp.minimum((u_value * (count - 1)).astype(jnp.int32), count - 2)
    new = new + (new >= old).astype(jnp.int32)
    hit = jnp.arange(num_layers) == layer[:, :, None]                     # [B, T, L]
    candidates = jnp.where(hit, new[:, :, None], parents[:, None, :])
    if state.constraint_fn is None:
        children = candidates[:, 0]
    else:
        flat = candidates.reshape(batch * tries, num_layers)
        feasible = jnp.asarray(state.constraint_fn(flat), bool).reshape(batch, tries)
        first = jnp.argmax(feasible, axis=1)
        chosen = jnp.take_along_axis(candidates, first[:, None, None], axis=1)[:, 0]
        children = jnp.where(jnp.any(feasible, axis=1)[:, None], chosen, parents)
    return children.astype(jnp.int32), state.replace(parents=state.birth[slots])


def tell(state: EvolutionState, children: Array, fitness: Array) -> EvolutionState:
    """Append ``n`` evaluated architectures (in order), removing the ``n`` oldest.

    ``n`` (static, 1 <= n <= P) is usually ``batch_size``, or ``P`` for the initial
    population.  NaN fitness is stored as -inf.  The best-so-far is updated with a
    strict improvement, so the earliest of equally fit architectures is kept.
    """
    num_members = state.population_size
    n = children.shape[0]
    if not 1 <= n <= num_members:
        raise ValueError(f"can tell 1..{num_members} architectures at once, got {n}")
    clean = _clean(fitness)
    slots = (state.head + jnp.arange(n)) % num_members
    births = state.num_evals + jnp.arange(n, dtype=jnp.int32)
    top = jnp.argmax(clean)
    better = (clean[top] > state.best_fitness) | (state.best_index < 0)
    return state.replace(
        population=state.population.at[slots].set(children.astype(jnp.int32)),
        fitness=state.fitness.at[slots].set(clean),
        birth=state.birth.at[slots].set(births),
        head=(state.head + n) % num_members,
        num_evals=state.num_evals + n,
        best_arch=jnp.where(better, children[top].astype(jnp.int32),
                            state.best_arch),
        best_fitness=jnp.where(better, clean[top], state.best_fitness),
        best_index=jnp.where(better, births[top], state.best_index),
    )


def _evaluator(fitness_fn: FitnessFn,
               constraint_fn: Optional[ConstraintFn]) -> FitnessFn:
    """``fitness_fn`` as float32, with infeasible architectures scored -inf."""

    def evaluate(archs: Array) -> Array:
        fitness = jnp.asarray(fitness_fn(archs), jnp.float32)
        if fitness.shape != (archs.shape[0],):
            raise ValueError(f"fitness_fn must map int32[N, L] to float32[N]; got "
                             f"shape {fitness.shape} for N = {archs.shape[0]}")
        if constraint_fn is not None:
            feasible = jnp.asarray(constraint_fn(archs), bool)
            fitness = jnp.where(feasible, fitness, -jnp.inf)
        return fitness

    return evaluate


@functools.partial(jax.jit, static_argnames=(
    "fitness_fn", "num_choices", "population_size", "sample_size", "num_cycles",
    "batch_size", "constraint_fn", "max_tries", "max_init_rounds"))
def _regularized_evolution(key: Array, fitness_fn: FitnessFn,
                           num_choices: tuple[int, ...], population_size: int,
                           sample_size: int, num_cycles: int, batch_size: int,
                           constraint_fn: Optional[ConstraintFn], max_tries: int,
                           max_init_rounds: int) -> EvolutionResult:
    """Jitted body of `regularized_evolution` (all configuration static)."""
    evaluate = _evaluator(fitness_fn, constraint_fn)
    k_init, k_loop = jax.random.split(key)
    state = init(k_init, num_choices, population_size=population_size,
                 sample_size=sample_size, batch_size=batch_size,
                 constraint_fn=constraint_fn, max_tries=max_tries,
                 max_init_rounds=max_init_rounds)
    initial = state.population
    initial_fitness = evaluate(initial)
    state = tell(state, initial, initial_fitness)

    def cycle(state: EvolutionState,
              k: Array) -> tuple[EvolutionState, tuple[Array, Array, Array]]:
        children, state = ask(k, state)
        fitness = evaluate(children)
        return tell(state, children, fitness), (children, fitness, state.parents)

    num_layers = len(num_choices)
    rounds, remainder = divmod(num_cycles, batch_size)
    keys = jax.random.split(k_loop, rounds + 1)
    archs, fits = [initial], [initial_fitness]
    parents = [jnp.full((population_size,), -1, jnp.int32)]
    if rounds:
        state, (a, f, p) = jax.lax.scan(cycle, state, keys[:rounds])
        archs.append(a.reshape(rounds * batch_size, num_layers))
        fits.append(f.reshape(-1))
        parents.append(p.reshape(-1))
    if remainder:  # a last, smaller round so exactly num_cycles children are made
        children, state = ask(keys[rounds], state)
        children = children[:remainder]
        fitness = evaluate(children)
        state = tell(state, children, fitness)
        archs.append(children)
        fits.append(fitness)
        parents.append(state.parents[:remainder])
    history = History(jnp.concatenate(archs), jnp.concatenate(fits))
    return EvolutionResult(state.best_arch, state.best_fitness, history,
                           jnp.concatenate(parents), state)


def regularized_evolution(fitness_fn: FitnessFn, num_choices: Sequence[int], *,
                          population_size: int, sample_size: int, num_cycles: int,
                          key: Array, batch_size: Optional[int] = None,
                          constraint_fn: Optional[ConstraintFn] = None,
                          max_tries: int = 8,
                          max_init_rounds: int = 256) -> EvolutionResult:
    """Regularized (aging) evolution of Real et al. (2019), jitted end to end.

    The initial ``population_size`` uniformly random architectures are evaluated in
    one ``fitness_fn`` call; then ``num_cycles`` children are made by `ask`/`tell`
    rounds of ``batch_size`` children (one ``fitness_fn`` call per round; see the
    module docstring for the batched variant and for ``constraint_fn``).  When
    ``batch_size`` does not divide ``num_cycles`` the last round is smaller.  The
    whole loop is one `jax.jit` (a `jax.lax.scan`); ``fitness_fn`` and
    ``constraint_fn`` are static, so pass the same function objects to reuse the
    compilation.

    Args:
      fitness_fn: pure, jittable int32[N, L] -> float32[N]; higher is better.
      num_choices: per-layer choice counts (a sequence of ints, one per layer).
      population_size: ``P``.
      sample_size: tournament size ``S``.
      num_cycles: number of children evaluated after the initial population.
      key: PRNG key; the same key gives an identical result.
      batch_size: children per ``fitness_fn`` call; None means 1 (the original).
      constraint_fn: optional feasibility predicate int32[N, L] -> bool[N].
      max_tries: mutations tried per child when ``constraint_fn`` is given.
      max_init_rounds: redraw rounds for infeasible initial members.

    Returns:
      `EvolutionResult`: best architecture and fitness ever evaluated, the full
      history (``population_size + num_cycles`` entries), each entry's parent and
      the final `EvolutionState`.
    """
    if num_cycles < 0:
        raise ValueError(f"num_cycles must be >= 0, got {num_cycles}")
    counts = _as_num_choices(num_choices)
    batch_size = 1 if batch_size is None else int(batch_size)
    return _regularized_evolution(key, fitness_fn, counts, int(population_size),
                                  int(sample_size), int(num_cycles), batch_size,
                                  constraint_fn, int(max_tries),
                                  int(max_init_rounds))


@functools.partial(jax.jit, static_argnames=(
    "fitness_fn", "num_choices", "num_samples", "batch_size", "constraint_fn",
    "max_init_rounds"))
def _random_search(key: Array, fitness_fn: FitnessFn, num_choices: tuple[int, ...],
                   num_samples: int, batch_size: int,
                   constraint_fn: Optional[ConstraintFn],
                   max_init_rounds: int) -> EvolutionResult:
    """Jitted body of `random_search` (all configuration static)."""
    evaluate = _evaluator(fitness_fn, constraint_fn)
    sample = functools.partial(_sample_feasible, num_choices=num_choices,
                               constraint_fn=constraint_fn,
                               max_rounds=max_init_rounds)

    def round_(_: None, k: Array) -> tuple[None, tuple[Array, Array]]:
        archs = sample(k, n=batch_size)
        return None, (archs, evaluate(archs))

    num_layers = len(num_choices)
    rounds, remainder = divmod(num_samples, batch_size)
    keys = jax.random.split(key, rounds + 1)
    archs, fits = [], []
    if rounds:
        _, (a, f) = jax.lax.scan(round_, None, keys[:rounds])
        archs.append(a.reshape(rounds * batch_size, num_layers))
        fits.append(f.reshape(-1))
    if remainder:
        a = sample(keys[rounds], n=remainder)
        archs.append(a)
        fits.append(evaluate(a))
    history = History(jnp.concatenate(archs), jnp.concatenate(fits))
    best = jnp.argmax(_clean(history.fitness))  # first of the maxima
    return EvolutionResult(history.archs[best], _clean(history.fitness)[best],
                           history, jnp.full((num_samples,), -1, jnp.int32), None)


def random_search(fitness_fn: FitnessFn, num_choices: Sequence[int], *,
                  num_samples: int, key: Array, batch_size: Optional[int] = None,
                  constraint_fn: Optional[ConstraintFn] = None,
                  max_init_rounds: int = 256) -> EvolutionResult:
    """Uniform random search baseline with the result type of evolution.

    Draws ``num_samples`` independent uniformly random architectures (rejection
    sampled against ``constraint_fn`` as for the initial evolution population) and
    evaluates them ``batch_size`` at a time; None means all in one call.

    Returns:
      `EvolutionResult` with the best (first maximum, NaN as -inf) over the history;
      ``parents`` is all -1 and ``state`` is None.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    counts = _as_num_choices(num_choices)
    batch_size = num_samples if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = min(batch_size, num_samples)
    return _random_search(key, fitness_fn, counts, int(num_samples), batch_size,
                          constraint_fn, int(max_init_rounds))
