"""The proxy population search in the search loop: chain paths scored by a zero-cost
proxy of one freshly initialised supernet (`jaxnas.proxies.chain_path_score`, the
path an input, so every generation is one vmapped call) and costed by a hardware
table (`jaxnas.hardware`: parameters, multiply-accumulates, or a measured latency
table); one loop step is one round of the strategy, so checkpoints and resume are the
loop's.

* ``evolution``: regularized evolution (Real et al. 2019) under ``hardware.budget``.
  Over-budget architectures are *resampled*, as Once-for-All's evolutionary search
  (Cai et al. 2020) does: the initial population is rejection-sampled and each child
  is the first feasible one of several mutations (`jaxnas.strategies.evolution`);
  resampling spends no evaluation on an architecture that cannot be deployed, where a
  fitness of -inf would spend one and shrink the tournament.  Should every try fail,
  the child is scored -inf and can never be chosen or returned (a safety net).
* ``nsga2``: NSGA-II (Deb et al. 2002, as NSGA-Net) maximising (proxy, -cost); the
  Pareto front of every evaluated architecture is written with its objectives, and
  which of its members the final population holds.

Results (``genotype.json``): the best (evolution) or highest-proxy front member
(nsga2) as ``genotype``, every evaluation, and the front; ``pareto.png``/``.pdf``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from jaxnas import config as config_lib
from jaxnas import hardware, parallel, proxies
from jaxnas.runners import common
from jaxnas.runners import loop as loop_lib
from jaxnas.runners import train as train_runner
from jaxnas.runners.oneshot import build_space
from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import evolution as evo
from jaxnas.strategies import nsga2 as nsga2_lib
from jaxnas.supernet.chain import ChainSupernet

log = logging.getLogger("jaxnas")

UNITS = {"params": "parameters", "macs": "multiply-accumulates", "latency": "ms"}
# The loop refuses to checkpoint a state holding inf/NaN, but -inf fitness (over
# budget, a singular NASWOT kernel) and +inf crowding (a front's extremes) are
# meaningful here: the state keeps them as -/+ the largest float32, which orders the
# same, and the results turn them back into infinities.
BIG = float(np.finfo(np.float32).max)


def _storable(x):
    return jnp.nan_to_num(x, nan=-BIG, posinf=BIG, neginf=-BIG)


def _unstored(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(x <= -BIG, -np.inf, np.where(x >= BIG, np.inf, x))


class SearchState(struct.PyTreeNode):
    """The supernet scored at init, the strategy's state and every evaluation."""

    variables: Any       # supernet variables (the proxy's network)
    key: jax.Array
    pop: Any             # EvolutionState, or NSGA-II's (population, objs, rank, crowd)
    archs: jax.Array     # int32[N, L]: every evaluated path in order (-1: not yet)
    fitness: jax.Array   # float32[N]: proxy (-inf: over budget)
    cost: jax.Array      # float32[N]
    count: jax.Array     # int32[]: evaluations so far


def history_size(config: ml_collections.ConfigDict) -> int:
    p = config.population
    per_round = p.batch_size if p.strategy == "evolution" else p.size
    return p.size + p.rounds * per_round


class Hooks(loop_lib.Hooks):
    """Population rounds over a proxy fitness and a hardware cost."""

    desc = "proxy_search"
    memory_keys = ("population.size", "population.batch_size",
                   "population.proxy_batch")

    def __init__(self, config: ml_collections.ConfigDict):
        self.proxy = proxies.check_names((config.population.proxy,),
                                         "population.proxy")[0]

    def check(self, config, mesh) -> None:
        if mesh.size > 1:
            raise config_lib.ConfigError(
                "the proxy population search runs on one device: expected a mesh of "
                f"one (got {dict(mesh.shape)})")

    def build(self, config, mesh) -> loop_lib.Plan:
        p, h = config.population, config.hardware
        data = train_runner.load_data(config)
        height = data.image_shape[0]
        space = build_space(config, data.image_shape[-1])
        if p.proxy_batch > len(data.train):
            raise config_lib.ConfigError(
                f"config.population.proxy_batch={p.proxy_batch} is not allowed: "
                f"expected at most the {len(data.train)} training images")
        fixed, table = hardware.config_table(config.hardware, space, data.num_classes,
                                             height)
        budget = float(h.budget)
        if budget > 0:  # an impossible budget is refused before anything compiles
            try:
                hardware.check_budget(fixed, table, budget, "config.hardware.budget")
            except ValueError as e:
                raise config_lib.ConfigError(str(e)) from None
        cost_fn = hardware.table_cost(fixed, table)
        constraint = (None if budget <= 0 else
                      (lambda archs: cost_fn(archs) <= budget))
        m = config.model
        supernet = ChainSupernet(space, data.num_classes, dispatch="gather",
                                 impl=m.impl, bn_momentum=m.bn_momentum)
        from jaxnas import data as data_lib
        first = next(iter(data_lib.eval_batches(data.train, p.proxy_batch, data.mean,
                                                data.std)))
        images = jnp.asarray(first["image"])
        labels = jnp.asarray(first["label"], jnp.int32)
        num_choices = space.num_choices
        n_total = history_size(config)
        name = self.proxy

        def fitness(variables, archs):
            score = jax.vmap(lambda path: proxies.chain_path_score(
                name, supernet, variables, images, labels, path))(archs)
            score = score.astype(jnp.float32)
            if constraint is not None:
                score = jnp.where(constraint(archs), score, -jnp.inf)
            return score

        def record(state: SearchState, archs, fit) -> SearchState:
            n = archs.shape[0]
            at = (state.count, 0)
            return state.replace(
                archs=jax.lax.dynamic_update_slice(state.archs, archs, at),
                fitness=jax.lax.dynamic_update_slice(state.fitness, _storable(fit),
                                                     at[:1]),
                cost=jax.lax.dynamic_update_slice(state.cost, cost_fn(archs), at[:1]),
                count=state.count + n)

        def init() -> SearchState:
            key = jax.random.key(config.seed, impl=train_runner.KEY_IMPL)
            k_var, k_pop, key = jax.random.split(key, 3)
            sample = jnp.zeros((1,) + data.image_shape, jnp.float32)
            variables = supernet.init(k_var, sample, jnp.zeros(space.num_layers,
                                                               jnp.int32))
            empty = SearchState(
                variables=variables, key=key, pop=None,
                archs=jnp.full((n_total, space.num_layers), -1, jnp.int32),
                fitness=jnp.full((n_total,), -BIG, jnp.float32),
                cost=jnp.zeros((n_total,), jnp.float32), count=jnp.int32(0))
            if p.strategy == "evolution":
                pop = evo.init(k_pop, num_choices, population_size=p.size,
                               sample_size=p.sample_size, batch_size=p.batch_size,
                               constraint_fn=constraint)
                fit = fitness(variables, pop.population)
                pop = _storable_evolution(evo.tell(pop, pop.population, fit))
                return record(empty.replace(pop=pop), pop.population, fit)
            keys = jax.random.split(k_pop, space.num_layers)
            population = jnp.stack([jax.random.randint(k, (p.size,), 0, c)
                                    for k, c in zip(keys, num_choices)],
                                   axis=1).astype(jnp.int32)
            fit = fitness(variables, population)
            objs = jnp.stack([fit, -cost_fn(population)], axis=1)
            _, rank, crowd = nsga2_lib.survivors(objs, p.size)
            pop = (population, _storable(objs), rank, _storable(crowd))
            return record(empty.replace(pop=pop), population, fit)

        def step(state: SearchState):
            key, sub = jax.random.split(state.key)
            state = state.replace(key=key)
            if p.strategy == "evolution":
                children, pop = evo.ask(sub, state.pop)
                fit = fitness(state.variables, children)
                pop = _storable_evolution(evo.tell(pop, children, fit))
                state = record(state.replace(pop=pop), children, fit)
                finite = jnp.where(pop.fitness > -BIG, pop.fitness, jnp.nan)
                metrics = {"best_fitness": pop.best_fitness,
                           "best_cost": cost_fn(pop.best_arch[None])[0],
                           "population_median": jnp.nanmedian(finite)}
                return state, metrics

            def objectives(archs):
                return jnp.stack([fitness(state.variables, archs), -cost_fn(archs)], 1)

            *pop, children, child_objs = nsga2_lib.next_generation(
                sub, *state.pop, objectives_fn=objectives, num_choices=num_choices,
                mutation_rate=1.0 / space.num_layers)
            population, objs, rank, crowd = pop
            pop = (population, _storable(objs), rank, _storable(crowd))
            state = record(state.replace(pop=pop), children, child_objs[:, 0])
            # distinct architectures: a population may hold copies of one
            front_size = nsga2_lib.distinct_count(population, rank == 0)
            metrics = {"front_size": front_size.astype(jnp.float32),
                       "max_fitness": jnp.max(objs[:, 0]),
                       "min_cost": -jnp.max(objs[:, 1])}
            return state, metrics

        stop = p.rounds if config.num_steps <= 0 else min(config.num_steps, p.rounds)

        def finalize(state: SearchState, loop: loop_lib.LoopResult) -> dict[str, Any]:
            n = int(parallel.host(state.count))
            archs = np.asarray(parallel.host(state.archs))[:n]
            fit = _unstored(parallel.host(state.fitness))[:n]
            cost = np.asarray(parallel.host(state.cost), np.float64)[:n]

            def entry(path, f, c) -> dict[str, Any]:
                return {"path": [int(v) for v in path],
                        "names": space_lib.path_names(path),
                        "fitness": float(f), "cost": float(c)}

            out = {"method": "proxy_search", "strategy": p.strategy, "proxy": name,
                   "cost": h.cost, "cost_unit": UNITS[h.cost],
                   "budget": budget if budget > 0 else None,
                   "space": space.to_dict(), "dataset": data.name}
            if p.strategy == "evolution":
                pop = state.pop
                best = np.asarray(parallel.host(pop.best_arch))
                best_fit = float(_unstored(parallel.host(pop.best_fitness)))
                out.update(genotype=space_lib.genotype_to_json(space, best,
                                                               data.num_classes),
                           best={**entry(best, best_fit,
                                         float(cost_fn(jnp.asarray(best[None]))[0]))})
            else:
                population, objs, rank, _ = (np.asarray(parallel.host(a))
                                             for a in state.pop)
                objs = _unstored(objs)
                front, front_objs = nsga2_lib.pareto_front(
                    archs, np.stack([fit, -cost], axis=1))
                final_front = {tuple(a) for a, r in zip(population, rank) if r == 0}
                out["front"] = [{**entry(a, o[0], -o[1]),
                                 "in_final_population": tuple(a) in final_front}
                                for a, o in zip(front, front_objs)]
                out["final_population"] = [{**entry(a, o[0], -o[1]), "rank": int(r)}
                                           for a, o, r in zip(population, objs, rank)]
                top = front[0]  # the front sorted by proxy, highest first
                out["genotype"] = space_lib.genotype_to_json(space, top,
                                                             data.num_classes)
            out["evaluated"] = [entry(a, f, c) for a, f, c in zip(archs, fit, cost)]
            return {**out, **loop.summary()}

        def report(results: dict, workdir: str) -> None:
            pareto_plot(results, os.path.join(workdir, "pareto.png"))
            g = results["genotype"]
            log.info("%s: %s (%s %s)", "best" if p.strategy == "evolution"
                     else f"front of {len(results['front'])}, highest proxy",
                     g["names"], name, results.get("best", {}).get("fitness", ""))
            log.info("results in %s (genotype.json, pareto.png, metrics.jsonl)",
                     workdir)

        return loop_lib.Plan(
            init=init, step=common.jit_step(step, mesh, ()), batches=lambda: (),
            feeds={}, stop=stop, evaluate=lambda state, s: {},
            eval_due=lambda s: False, finalize=finalize, report=report)


def _storable_evolution(pop: evo.EvolutionState) -> evo.EvolutionState:
    return pop.replace(fitness=_storable(pop.fitness),
                       best_fitness=_storable(pop.best_fitness))


def pareto_plot(results: dict, path: str) -> None:
    """Proxy against cost of every evaluated path, the front (NSGA-II) or the best
    and the budget (evolution); PNG and PDF through `jaxnas.plots`' writer."""
    from jaxnas import plots

    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(e["cost"], e["fitness"]) for e in results["evaluated"]
           if np.isfinite(e["fitness"])]
    if pts:
        c, f = zip(*pts)
        ax.scatter(c, f, s=10, color="0.7", label="evaluated")
    if results["strategy"] == "nsga2":
        fc = [e["cost"] for e in results["front"]]
        ff = [e["fitness"] for e in results["front"]]
        order = np.argsort(fc)
        ax.plot(np.asarray(fc)[order], np.asarray(ff)[order], "o-", color="C3",
                label=f"Pareto front ({len(fc)})")
    else:
        b = results["best"]
        ax.scatter([b["cost"]], [b["fitness"]], s=60, marker="*", color="C3",
                   label="best", zorder=3)
        if results["budget"]:
            ax.axvline(results["budget"], color="C0", linestyle="--", label="budget")
    ax.set_xlabel(f"{results['cost']} ({results['cost_unit']})")
    ax.set_ylabel(f"{results['proxy']} at initialisation")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    plots._save(fig, path)
    plt.close(fig)


def hooks(config: ml_collections.ConfigDict) -> Hooks:
    return Hooks(config)
