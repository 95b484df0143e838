"""Retraining an architecture from scratch in the search loop: pure jittable steps
(`trainer`) and the loop hooks around them.

The architecture's space builds its discrete network (`Space.network`: a DARTS
genotype becomes `NetworkCIFAR` with auxiliary head and drop-path, a chain path its
`ChainNet`) and says which recipe options it takes (`Space.trainer_options`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from jaxnas import config as config_lib
from jaxnas import losses
from jaxnas import parallel
from jaxnas import spaces
from jaxnas.networks import param_count
from jaxnas.optim import cosine_epoch_schedule, weight_optimizer
from jaxnas.runners import common
from jaxnas.runners import loop as loop_lib
from jaxnas.types import Batch, Metrics, PyTree

log = logging.getLogger("jaxnas")

AUX_HEAD = "auxiliary_head"  # the name of the auxiliary head in NetworkCIFAR's params
# PRNG keys of a run: XLA's RngBitGenerator. Initialising a network's hundreds of
# tensors with threefry compiles about 4x slower on CPU (21 s against 5 s for a tiny
# DARTS_V2 net); rbg streams are reproducible on one backend, not across backends.
KEY_IMPL = "rbg"


class TrainState(struct.PyTreeNode):
    """Everything retraining carries from one step to the next."""

    step: jax.Array         # int32 scalar: updates done so far
    params: PyTree
    batch_stats: PyTree     # BatchNorm running averages (not optimised)
    opt_state: optax.OptState
    key: jax.Array          # base PRNG key; step s uses fold_in(key, s)


class Trainer(NamedTuple):
    """Pure functions of a retraining run (all jittable).

    init(key, sample_images) -> TrainState; step(state, batch) -> (state, metrics);
    evaluate(state, batch) -> per-batch sums {"loss_sum", "correct", "count"};
    lr(step) and drop_path_prob(step): the schedules the step uses.
    """

    init: Callable[..., TrainState]
    step: Callable[..., tuple[TrainState, Metrics]]
    evaluate: Callable[..., Metrics]
    lr: Callable[[jax.Array], jax.Array]
    drop_path_prob: Callable[[jax.Array], jax.Array]


def drop_path_schedule(drop_path_prob: float, epochs: int,
                       steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """DARTS' `drop_path_prob * epoch / epochs`, epoch = step // steps_per_epoch."""

    def schedule(step: jax.Array) -> jax.Array:
        epoch = jnp.minimum(step // steps_per_epoch, epochs)
        return drop_path_prob * epoch.astype(jnp.float32) / epochs

    return schedule


def _forward(model):
    """``forward(variables, images, train, drop_path_prob, rng) -> ((logits, aux),
    batch_stats)``: one calling convention for every discrete network (``aux`` None
    when the network has no auxiliary head, new statistics only in training). A
    static ``drop_path_prob`` of 0 passes no drop-path arguments (no drop-path ops)."""

    def forward(variables, images, train, drop_path_prob=0.0, rng=None):
        if not train:
            out, batch_stats = model.apply(variables, images, train=False), None
        else:
            extra = ({} if isinstance(drop_path_prob, float) and drop_path_prob == 0.0
                     else {"drop_path_prob": drop_path_prob, "rngs": {"dropout": rng}})
            out, upd = model.apply(variables, images, train=True,
                                   mutable=["batch_stats"], **extra)
            batch_stats = upd["batch_stats"]
        return (out if isinstance(out, tuple) else (out, None)), batch_stats

    return forward


def trainer(model: Any, *, epochs: int, steps_per_epoch: int,
            lr: float = 0.025, lr_min: float = 0.0, momentum: float = 0.9,
            weight_decay: float = 3e-4, grad_clip: float = 5.0,
            auxiliary_weight: float = 0.4, drop_path_prob: float = 0.0) -> Trainer:
    """The DARTS evaluation recipe for `model` as pure functions.

    One step: loss = CE(logits) + auxiliary_weight * CE(aux_logits) (when the model
    has the auxiliary head), gradient clipped to global norm `grad_clip`, then torch
    SGD (coupled weight decay, momentum) with the learning rate cosine-annealed from
    `lr` to `lr_min` once per epoch. Drop-path probability `drop_path_prob * epoch /
    epochs` is computed from the step inside the step (a traced scalar: one compile
    for the whole run); with `drop_path_prob == 0` drop-path is left out of the graph.
    The drop-path key of step s is `fold_in(state.key, s)`. Which of these a
    network has is its space's `trainer_options` (a chain network: neither).
    """
    forward = _forward(model)
    lr_fn = cosine_epoch_schedule(lr, lr_min, epochs, steps_per_epoch)
    drop_fn = drop_path_schedule(drop_path_prob, epochs, steps_per_epoch)
    tx = weight_optimizer(lr_fn, momentum=momentum, weight_decay=weight_decay,
                          grad_clip=grad_clip)

    def init(key: jax.Array, sample_images: jax.Array) -> TrainState:
        k_params, k_train = jax.random.split(key)
        variables = model.init(k_params, sample_images, train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params), key=k_train)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        p = drop_fn(state.step)
        call_p = 0.0 if drop_path_prob == 0 else p  # static 0: no drop-path ops
        rng = jax.random.fold_in(state.key, state.step)
        labels = batch["label"]

        def loss_fn(params):
            (logits, aux), batch_stats = forward(
                {"params": params, "batch_stats": state.batch_stats}, batch["image"],
                True, call_p, rng)
            ce = losses.cross_entropy(logits, labels)
            loss = ce
            if aux is not None:
                loss = loss + auxiliary_weight * losses.cross_entropy(aux, labels)
            return loss, (ce, logits, batch_stats)

        (loss, (ce, logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": loss, "train_ce": ce,
                   "train_accuracy": losses.accuracy(logits, labels),
                   "lr": lr_fn(state.step), "drop_path_prob": p,
                   "grad_norm": optax.tree.norm(grads)}
        return state.replace(step=state.step + 1, params=params,
                             batch_stats=batch_stats, opt_state=opt_state), metrics

    def evaluate(state: TrainState, batch: Batch) -> Metrics:
        """Summed loss, correct count and example count on `batch` in eval mode
        (running BatchNorm statistics, no drop-path, no auxiliary head); rows where
        `batch["mask"]` is False are padding and do not count."""
        (logits, _), _ = forward({"params": state.params,
                                  "batch_stats": state.batch_stats},
                                 batch["image"], False)
        return losses.eval_sums(logits, batch)

    return Trainer(init=init, step=step, evaluate=evaluate, lr=lr_fn,
                   drop_path_prob=drop_fn)


class Hooks(loop_lib.Hooks):
    """Retraining `arch` from scratch: the whole train split, the test split for
    evaluation; its space (`jaxnas.spaces.space_of`) builds the network."""

    desc = "train"
    results_file = "result.json"

    def __init__(self, arch: Any):
        self.space = spaces.space_of(arch)
        self.arch = self.space.validate(arch)
        self.arch_json = self.space.to_json(self.arch)
        self.description = self.space.describe(self.arch)

    def check_resumable(self, config, meta) -> None:
        """Refuses a checkpoint of another genotype or a different config."""
        common.check_resumable(config, meta)
        if meta.get("genotype") != self.arch_json:
            saved = meta.get("genotype")
            try:
                arch = spaces.from_json(saved)
                saved = spaces.space_of(arch).describe(arch)
            except (ValueError, TypeError, KeyError):
                pass
            raise config_lib.ConfigError(
                f"the workdir holds a training run of another genotype ({saved}); use "
                "a new --workdir, or pass that genotype to resume")

    def meta(self) -> dict[str, Any]:
        return {"genotype": self.arch_json}

    def build(self, config, mesh) -> loop_lib.Plan:
        data = load_data(config)
        self.space.check_data(self.arch, name=data.name, num_classes=data.num_classes,
                              image_shape=data.image_shape)
        b = config.data.batch_size
        steps_per_epoch, total_steps, stop = loop_lib.epochs_to_steps(
            config, len(data.train), b, "the training split")
        model = self.space.network(self.arch, num_classes=data.num_classes,
                                   model=config.model)
        o = config.optim
        tr = trainer(model, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                     lr=o.lr, lr_min=o.lr_min, momentum=o.momentum,
                     weight_decay=o.weight_decay, grad_clip=o.grad_clip,
                     **self.space.trainer_options(config.model))
        train_it, to_global = common.sharded_batches(
            data.train, data, config, mesh, seed=config.seed, augment=True)
        eval_fn = common.eval_function(tr.evaluate, mesh)
        eval_b = common.round_to_axis(config.data.eval_batch_size or b, mesh,
                                      "config.data.eval_batch_size")
        eval_every = config.eval_every * steps_per_epoch  # 0: only at the end
        sample = jnp.zeros((1,) + data.image_shape, jnp.float32)
        counts = {}

        def started(state, start: int) -> None:
            counts["num_params"] = param_count(
                {k: v for k, v in state.params.items() if k != AUX_HEAD})
            counts["num_params_with_auxiliary"] = param_count(state.params)
            log.info("training %s: %d parameters (%d with the auxiliary head), %d "
                     "steps of batch %d (%d an epoch)", self.description,
                     counts["num_params"], counts["num_params_with_auxiliary"], stop,
                     b, steps_per_epoch)

        def evaluate(state, step: int) -> dict[str, Any]:
            out = common.evaluate(eval_fn, state, data.test, data, eval_b, mesh=mesh)
            record = {**{f"test_{k}": v for k, v in out.items()},
                      "epoch": step / steps_per_epoch}
            log.info("step %d (epoch %.2f): test accuracy %.4f", step, record["epoch"],
                     record["test_accuracy"])
            return record

        def finalize(state, loop: loop_lib.LoopResult) -> dict[str, Any]:
            # a resumed finished run: the same weights give the same figures
            final = loop.last_eval or evaluate(state, loop.step)
            return {"genotype": self.arch_json, "genotype_str": self.description,
                    "dataset": data.name, **counts,
                    "test_accuracy": final["test_accuracy"],
                    "test_error": 1.0 - final["test_accuracy"],
                    "test_loss": final["test_loss"], "steps": loop.step,
                    "epochs": loop.step / steps_per_epoch, "total_steps": total_steps}

        def report(results, workdir: str) -> None:
            log.info("test accuracy %.4f after %d steps; results in %s (result.json, "
                     "metrics.jsonl, checkpoints/)", results["test_accuracy"],
                     results["steps"], workdir)

        return loop_lib.Plan(
            init=lambda: tr.init(jax.random.key(config.seed, impl=KEY_IMPL), sample),
            step=common.jit_step(tr.step, mesh, (parallel.batch_sharding(mesh),)),
            batches=lambda: (to_global(next(train_it)),), feeds={"train": train_it},
            stop=stop, evaluate=evaluate,
            eval_due=lambda step: bool(eval_every and step % eval_every == 0)
            or step == stop,
            started=started, finalize=finalize, report=report)


class TrainData(NamedTuple):
    """The full training split, the test split and what the model needs to know."""

    name: str
    train: Any  # data.ArraySplit
    test: Any
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_data(config: ml_collections.ConfigDict) -> TrainData:
    """The whole `train` split and the `test` split (`validation` if there is none)."""
    from jaxnas import data as data_lib

    data_dir = config.data.data_dir or None
    name = data_lib.canonical_name(config.data.dataset)
    train, num_classes = data_lib._load(name, "train", data_dir,
                                        data_lib.DEFAULT_MAX_BYTES)
    splits = data_lib.find_prepared(name, data_dir).splits
    test = data_lib.load_split(name, "test" if "test" in splits else "validation",
                               data_dir)
    base = data_lib._parse_name(name)[0]
    mean, std = data_lib.DATASET_STATS.get(base) or data_lib.channel_stats(train.images)
    return TrainData(name, train, test, num_classes,
                     tuple(int(d) for d in train.images.shape[1:]), tuple(mean),
                     tuple(std))


def run(config: ml_collections.ConfigDict, arch: Any, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) `arch` in `workdir`; returns the result.json dict
    (`jaxnas.train.run` validates the config first)."""
    return loop_lib.run(config, workdir, Hooks(arch))
