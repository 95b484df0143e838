"""SPOS / FairNAS in the search loop: supernet training steps, then the evolution
over the trained supernet."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxnas import config as config_lib
from jaxnas import parallel
from jaxnas import plots
from jaxnas.optim import cosine_schedule
from jaxnas.runners import common
from jaxnas.runners import loop as loop_lib
from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import oneshot as oneshot_lib
from jaxnas.supernet.chain import ChainSupernet

log = logging.getLogger("jaxnas")

METHODS = ("spos", "fairnas")


def evolution_settings(config: ml_collections.ConfigDict
                       ) -> oneshot_lib.EvolutionSettings:
    """The evolution settings of a config; ConfigError when they do not fit."""
    e = config.evolution
    settings = oneshot_lib.EvolutionSettings(
        method=e.method, population_size=e.population_size, sample_size=e.sample_size,
        num_cycles=e.num_cycles, batch_size=e.batch_size, max_params=e.max_params)
    if settings.sample_size > settings.population_size:
        raise config_lib.ConfigError(
            f"config.evolution.sample_size={settings.sample_size} is not allowed: "
            f"expected at most evolution.population_size={settings.population_size}")
    if (settings.method == "evolution"
            and settings.batch_size > settings.population_size):
        raise config_lib.ConfigError(
            f"config.evolution.batch_size={settings.batch_size} is not allowed: "
            f"expected at most evolution.population_size={settings.population_size}")
    return settings


def build_space(config: ml_collections.ConfigDict, in_channels: int
                ) -> space_lib.ChainSpace:
    """The space a config describes (`model.space`: the chain by default, or "nb201");
    ConfigError naming the keys if invalid."""
    m = config.model
    if m.get("space", "chain") == "nb201":
        from jaxnas.spaces.nb201 import NB201Space
        return NB201Space()
    try:
        return space_lib.ChainSpace(
            stem_channels=m.stem_channels, widths=tuple(m.widths),
            depths=tuple(m.depths), strides=tuple(m.strides),
            head_channels=m.head_channels, stem_stride=m.stem_stride,
            in_channels=in_channels)
    except (TypeError, ValueError) as e:
        raise config_lib.ConfigError(
            f"config.model.widths={tuple(m.widths)!r}, model.depths="
            f"{tuple(m.depths)!r}, model.strides={tuple(m.strides)!r} do not describe "
            f"a chain space: {e}") from None


def build(config: ml_collections.ConfigDict, num_classes: int, in_channels: int,
          total_steps: int):
    """``(space, model, strategy)`` of a SPOS / FairNAS config."""
    if config.method not in METHODS:
        raise config_lib.ConfigError(f"config.method={config.method!r} is not allowed: "
                                     f"expected one of {', '.join(METHODS)}")
    space = build_space(config, in_channels)
    m, o = config.model, config.optim
    if getattr(space, "name", None) == "nb201":  # a path: one op index per edge
        from jaxnas.supernet.nb201 import NB201Supernet
        model = NB201Supernet(C=m.channels, N=m.layers, num_classes=num_classes,
                              mixed_op=m.mixed_op, affine=m.affine,
                              bn_momentum=m.bn_momentum)
        space = model.space
    else:
        model = ChainSupernet(space, num_classes, dispatch=m.dispatch, impl=m.impl,
                              bn_momentum=m.bn_momentum)
    factory = oneshot_lib.fairnas if config.method == "fairnas" else oneshot_lib.spos
    strategy = factory(model, learning_rate=cosine_schedule(o.lr, o.lr_min,
                                                            total_steps),
                       momentum=o.momentum, weight_decay=o.weight_decay,
                       grad_clip=o.grad_clip, evolution=evolution_settings(config))
    return space, model, strategy


def describe_path(space, path: list[int], config: ml_collections.ConfigDict,
                  num_classes: int, in_channels: int) -> dict[str, Any]:
    """The genotype JSON, op names and parameter count of a path of `space`."""
    if getattr(space, "name", None) == "nb201":
        from jaxnas.spaces.nb201 import NB201Genotype
        arch = space.validate(NB201Genotype(tuple(path)))
        return {"genotype": space.to_json(arch), "path_names": list(arch.names),
                "genotype_str": space.describe(arch),
                "params": space.num_params(arch, channels=config.model.channels,
                                           layers=config.model.layers,
                                           num_classes=num_classes,
                                           in_channels=in_channels)}
    return {"genotype": space_lib.genotype_to_json(space, path, num_classes),
            "path_names": space_lib.path_names(path),
            "params": space_lib.count_params(space, path, num_classes)}


def stack_eval(split, batch_size: int, mean, std, rows: tuple[int, int] = (0, 1)
               ) -> dict[str, np.ndarray]:
    """A whole split as padded batches: image [B, N, H, W, C], label, mask [B, N]
    (with ``rows = (index, count)`` only that slice of each batch's N rows)."""
    from jaxnas import data as data_lib

    batches = list(data_lib.eval_batches(split, batch_size, mean, std,
                                         process_index=rows[0], process_count=rows[1]))
    return {k: np.stack([b[k] for b in batches]) for k in ("image", "label", "mask")}


def calibration_images(data, config: ml_collections.ConfigDict,
                       rows: tuple[int, int] = (0, 1)) -> np.ndarray:
    """float32[K, N, H, W, C]: the fixed, unaugmented recalibration batches (with
    ``rows = (index, count)`` only that slice of each batch's N rows)."""
    from jaxnas import data as data_lib

    it = data_lib.BatchIterator(data.train.images, data.train.labels,
                                batch_size=config.data.batch_size, mean=data.mean,
                                std=data.std, seed=config.seed + 2, augment=None,
                                process_index=rows[0], process_count=rows[1])
    return np.stack([next(it)["image"] for _ in range(config.oneshot.calib_batches)])


def _subset(split, n: int):
    from jaxnas import data as data_lib

    if n <= 0 or n >= len(split):
        return split
    return data_lib.ArraySplit(split.images[:n], split.labels[:n])


def weights_checksum(tree: Any) -> str:
    """SHA-256 of the bytes of every array in a pytree (in tree order)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        leaf = np.ascontiguousarray(leaf)
        digest.update(str((leaf.dtype, leaf.shape)).encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def check_mesh(config: ml_collections.ConfigDict, mesh) -> None:
    """ConfigError unless the batches split over the mesh (before any compile)."""
    sizes = {"data.batch_size": (config.data.batch_size, "data")}
    if mesh.shape["path"] > 1:
        if config.method != "fairnas":
            raise config_lib.ConfigError(
                f"config.mesh.path={mesh.shape['path']} is not allowed for "
                f"method={config.method!r}: only FairNAS trains several paths a step")
        # the choice count does not depend on the input channels, unknown before data
        m = oneshot_lib.fair_paths(build_space(config, in_channels=1))
        if m % mesh.shape["path"]:
            divisors = [str(d) for d in range(1, m + 1) if m % d == 0]
            raise config_lib.ConfigError(
                f"config.mesh.path={mesh.shape['path']} does not divide the "
                f"{m} strictly fair paths of a FairNAS step: use "
                f"{', '.join(divisors[:-1])} or {divisors[-1]}")
        sizes["fairnas paths a step"] = (m, "path")
    parallel.check_divisible(mesh, sizes)


class StepFunction(NamedTuple):
    """The jitted supernet step on a mesh and how to feed it."""

    step: Any                 # jitted (state, batch) -> (state, metrics)
    sharding: Any             # the batch's NamedSharding
    prefix: tuple[int, ...]   # leading axes before the batch axis ((m,) per path)
    batch_size: int           # the global batch
    rows: tuple[int, int]     # (index, count): this process's rows of each batch

    def feed(self, local: dict[str, np.ndarray]) -> dict[str, Any]:
        """Global arrays from this process's rows (and all of the leading axes)."""
        k = len(self.prefix)
        block = parallel.local_block(self.sharding, self.prefix + (self.batch_size,))[:k]

        def global_shape(x: np.ndarray) -> tuple[int, ...]:
            return self.prefix + (self.batch_size,) + tuple(np.shape(x)[k + 1:])

        return parallel.global_batch({key: np.asarray(v)[block] for key, v in
                                      local.items()}, self.sharding, global_shape)


def step_function(strategy, mesh, *, fair: bool, per_path: bool, batch_size: int,
                  num_paths: int | None = None) -> StepFunction:
    """The jitted SPOS/FairNAS step on `mesh` (state replicated).

    Batches are split on ``data``. FairNAS with ``mesh.path > 1`` also spreads its
    m paths over ``path``: per-path batches [m, N, ...] are split on both axes; a
    shared batch is split on ``data`` and broadcast to the m paths inside the step
    (the same arithmetic as sharing it: each path sees the identical batch), so
    that the paths' vmapped gradients land on different devices.
    """
    # m: the paths of a FairNAS step, `fair_paths` of the space; every chain layer
    # offers the same candidate blocks, so callers without the space may omit it.
    m = len(space_lib.CHOICES) if num_paths is None else num_paths
    spread = fair and mesh.shape["path"] > 1
    prepare = None
    if per_path:
        sharding, prefix = parallel.batch_sharding(mesh, leading=("path",)), (m,)
    else:
        sharding, prefix = parallel.batch_sharding(mesh), ()
        if spread:
            inside = parallel.constrain(parallel.batch_sharding(mesh, leading=("path",)))

            def broadcast_to_paths(batch):
                return (inside(jax.tree.map(
                    lambda x: jnp.broadcast_to(x[None], (m,) + x.shape), batch)),)

            prepare = broadcast_to_paths
    rows = parallel.process_rows(sharding, prefix + (batch_size,), axis=len(prefix))
    step = common.jit_step(strategy.step, mesh, (sharding,), prepare=prepare)
    return StepFunction(step, sharding, prefix, batch_size, rows)


class PopulationFunctions(NamedTuple):
    """Population evaluation on a mesh: members on ``pop``, images on ``data``."""

    accuracy: Any        # jitted (variables, paths[P, L], calib, val) -> float32[P]
    evolve: Any          # jitted (variables, calib, val) -> EvolutionResult
    calib_sharding: Any  # [K, N, H, W, C]: N on data
    eval_sharding: Any   # [B, N, ...]: N on data


def population_functions(model, space, num_classes: int,
                         settings: oneshot_lib.EvolutionSettings, mesh,
                         search_key) -> PopulationFunctions:
    """`population_accuracy` and the evolution over the supernet, jitted on `mesh`.

    The population's paths are constrained to the ``pop`` axis inside the jitted
    functions (every fitness call of the evolution included); the calibration and
    validation images are inputs split on ``data``. The evolution is
    `strategy.derive` (supernet fitness, then `oneshot.search`) with that
    constraint, keyed by ``search_key()`` (made inside, from the seed).
    """
    rep = parallel.replicated(mesh)
    on_pop = parallel.constrain(parallel.axis_sharding(mesh, "pop"))
    stacked = parallel.batch_sharding(mesh, leading=(None,))

    def accuracy(variables, paths, calib, val):
        return oneshot_lib.population_accuracy(model, variables, on_pop(paths), calib,
                                               val)

    def evolve(variables, calib, val):
        fitness = oneshot_lib.supernet_fitness(model, variables, calib, val)
        result = oneshot_lib.search(lambda paths: fitness(on_pop(paths)), space,
                                    num_classes, settings, search_key())
        return result._replace(state=None)  # the final ring buffer is not reported

    return PopulationFunctions(
        accuracy=jax.jit(accuracy, in_shardings=(rep, rep, stacked, stacked),
                         out_shardings=rep),
        evolve=jax.jit(evolve, in_shardings=(rep, stacked, stacked), out_shardings=rep),
        calib_sharding=stacked, eval_sharding=stacked)


def eval_batch_size(config: ml_collections.ConfigDict, mesh) -> int:
    """``oneshot.eval_batch_size`` rounded up to a multiple of the ``data`` axis
    (evaluation batches are padded and masked, so this changes no result)."""
    return common.round_to_axis(config.oneshot.eval_batch_size, mesh,
                                "config.oneshot.eval_batch_size")


def _stacked(local: dict[str, np.ndarray] | np.ndarray, sharding, count: int):
    """[B, n, ...] local rows -> global [B, n * count, ...] split on data."""
    return parallel.global_batch(local, sharding, parallel.scale_axis(1, count))


class Hooks(loop_lib.Hooks):
    """SPOS / FairNAS: supernet training steps, then the evolution over the trained
    supernet (one jitted program, deterministic given the final checkpoint and the
    seed: an interruption there re-runs it from that checkpoint to the same result)."""

    memory_keys = ("data.batch_size", "oneshot.eval_batch_size")

    def __init__(self, config: ml_collections.ConfigDict):
        self.desc = config.method

    def check(self, config, mesh) -> None:
        evolution_settings(config)  # cross-key checks before any data or compile
        check_mesh(config, mesh)

    def build(self, config, mesh) -> loop_lib.Plan:
        data = common.load_data(config)
        b = config.data.batch_size
        fair = config.method == "fairnas"
        per_path = fair and not config.fairnas.shared_batch
        paths = oneshot_lib.fair_paths(build_space(config, data.image_shape[-1]))
        batches_per_step = paths if per_path else 1
        steps_per_epoch, total_steps, stop = loop_lib.epochs_to_steps(
            config, len(data.train), b * batches_per_step, "the training split")
        space, model, strategy = build(config, data.num_classes, data.image_shape[-1],
                                       total_steps)

        def keys():  # k_init, k_eval, k_search: made inside jitted code
            return jax.random.split(jax.random.key(config.seed), 3)

        shape = (b,) + data.image_shape
        stepper = step_function(strategy, mesh, fair=fair, per_path=per_path,
                                batch_size=b, num_paths=paths)
        train_it = common.batches(data.train, data, config, seed=config.seed,
                                  augment=True, rows=stepper.rows)
        settings = evolution_settings(config)
        population = population_functions(model, space, data.num_classes, settings,
                                          mesh, lambda: keys()[2])
        ev = eval_batch_size(config, mesh)
        calib_rows = parallel.process_rows(population.calib_sharding,
                                           (config.oneshot.calib_batches, b), axis=1)
        eval_rows = parallel.process_rows(population.eval_sharding, (1, ev), axis=1)
        calib = _stacked(calibration_images(data, config, calib_rows),
                         population.calib_sharding, calib_rows[1])
        val_split = _subset(data.val, config.oneshot.val_examples)
        val = _stacked(stack_eval(val_split, ev, data.mean, data.std, eval_rows),
                       population.eval_sharding, eval_rows[1])
        eval_paths = parallel.put(
            np.asarray(jax.random.randint(keys()[1], (config.oneshot.eval_paths,
                                                      space.num_layers), 0,
                                          paths, jnp.int32)),
            parallel.replicated(mesh))

        def next_batches() -> tuple:
            if not per_path:
                return (stepper.feed(next(train_it)),)
            parts = [next(train_it) for _ in range(batches_per_step)]
            return (stepper.feed({k: np.stack([p[k] for p in parts])
                                  for k in parts[0]}),)

        def variables(state) -> dict[str, Any]:
            return {"params": state.params, "batch_stats": state.batch_stats}

        def evaluate(state, step: int) -> dict[str, Any]:
            acc = parallel.host(population.accuracy(variables(state), eval_paths,
                                                    calib, val))
            return {"val_accuracy": float(acc.mean()), "val_accuracy_max":
                    float(acc.max()), "val_accuracy_min": float(acc.min()),
                    "epoch": step / steps_per_epoch}

        def finalize(state, loop: loop_lib.LoopResult) -> dict[str, Any]:
            t_search = time.time()
            result = parallel.host(population.evolve(variables(state), calib, val))
            search_seconds = time.time() - t_search
            path = [int(c) for c in result.best_arch]
            history = np.asarray(result.history.fitness, np.float64)
            test = _stacked(stack_eval(data.test, ev, data.mean, data.std, eval_rows),
                            population.eval_sharding, eval_rows[1])
            test_acc = float(parallel.host(population.accuracy(
                variables(state), parallel.put(np.asarray([path], np.int32),
                                               parallel.replicated(mesh)),
                calib, test))[0])
            curve = oneshot_lib.round_stats(history, settings)
            initial = history[:min(settings.population_size, len(history))]
            initial = initial[np.isfinite(initial)]
            return {
                "method": config.method,
                "path": path,
                **describe_path(space, path, config, data.num_classes,
                                data.image_shape[-1]),
                "fitness": float(result.best_fitness),
                "supernet_test_accuracy": test_acc,
                "random_fitness_mean": (float(initial.mean()) if initial.size
                                        else None),
                "search": {"method": settings.method, "evaluations": int(len(history)),
                           "seconds": round(search_seconds, 2), **settings._asdict()},
                "evolution": curve,
                "training_counts": np.asarray(parallel.host(state.counts)).tolist(),
                "weights_sha256": weights_checksum(parallel.host(variables(state))),
                **loop.summary(),
                "timing": {**loop.timing(), "search_s": round(search_seconds, 2)},
            }

        def report(results, workdir: str) -> None:
            curve = results["evolution"]
            plots.fitness_curve(curve["round"], curve["best"], curve["median"],
                                os.path.join(workdir, "evolution.png"))
            log.info("path %s (%s), fitness %.4f, %d parameters", results["path"],
                     " ".join(results["path_names"]), results["fitness"],
                     results["params"])
            log.info("results in %s (genotype.json, metrics.jsonl, checkpoints/, "
                     "evolution.png)", workdir)

        return loop_lib.Plan(
            init=lambda: strategy.init(keys()[0], jnp.zeros(shape, jnp.float32)),
            step=stepper.step, batches=next_batches, feeds={"train": train_it},
            stop=stop, evaluate=evaluate,
            eval_due=lambda step: bool(config.oneshot.eval_paths) and (
                step % (config.eval_every or steps_per_epoch) == 0 or step == stop),
            finalize=finalize, report=report)


def hooks(config: ml_collections.ConfigDict) -> Hooks:
    return Hooks(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs or resumes a SPOS / FairNAS search in `workdir` (`jaxnas.search.run`
    validates the config first); returns the results."""
    return loop_lib.run(config, workdir, Hooks(config))
