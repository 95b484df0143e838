"""Retraining a genotype from scratch: pure jittable steps, then the loop around them.

One loop serves both search spaces: a DARTS genotype becomes `NetworkCIFAR` (auxiliary
head, drop-path), a chain genotype (SPOS / FairNAS) the discrete `ChainNet` of its path.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from jaxnas import checkpoint as ckpt_lib
from jaxnas import config as config_lib
from jaxnas import workdir as wd
from jaxnas.networks.darts_eval import NetworkCIFAR, param_count
from jaxnas.runners import common
from jaxnas.spaces import chain as chain_space
from jaxnas.spaces import genotypes
from jaxnas.spaces import resolve
from jaxnas.supernet.chain import ChainNet, build_path_network
from jaxnas.strategies.darts import cosine_epoch_schedule, weight_optimizer
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


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def drop_path_schedule(drop_path_prob: float, epochs: int,
                       steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """DARTS' `drop_path_prob * epoch / epochs`, epoch = step // steps_per_epoch."""

    def schedule(step: jax.Array) -> jax.Array:
        epoch = jnp.minimum(step // steps_per_epoch, epochs)
        return drop_path_prob * epoch.astype(jnp.float32) / epochs

    return schedule


def _forward(model: NetworkCIFAR | ChainNet):
    """``forward(variables, images, train, drop_path_prob, rng) -> ((logits, aux),
    batch_stats)``: one calling convention for both networks (``aux`` None, new
    statistics only in training)."""
    if isinstance(model, NetworkCIFAR):
        def forward(variables, images, train, drop_path_prob=0.0, rng=None):
            if not train:
                return model.apply(variables, images, train=False), None
            out, upd = model.apply(variables, images, train=True,
                                   drop_path_prob=drop_path_prob,
                                   rngs={"dropout": rng}, mutable=["batch_stats"])
            return out, upd["batch_stats"]
    else:
        def forward(variables, images, train, drop_path_prob=0.0, rng=None):
            del drop_path_prob, rng  # chain blocks have no drop-path
            if not train:
                return (model.apply(variables, images, train=False), None), None
            logits, upd = model.apply(variables, images, train=True,
                                      mutable=["batch_stats"])
            return (logits, None), upd["batch_stats"]
    return forward


def trainer(model: NetworkCIFAR | ChainNet, *, epochs: int, steps_per_epoch: int,
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
    The drop-path key of step s is `fold_in(state.key, s)`. A `ChainNet` has
    neither auxiliary head nor drop-path (pass ``drop_path_prob=0``).
    """
    if not isinstance(model, NetworkCIFAR) and drop_path_prob:
        raise ValueError(f"drop_path_prob={drop_path_prob}: a chain network has no "
                         "drop-path; expected 0")
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
            ce = _cross_entropy(logits, labels)
            loss = ce
            if aux is not None:
                loss = loss + auxiliary_weight * _cross_entropy(aux, labels)
            return loss, (ce, logits, batch_stats)

        (loss, (ce, logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": loss, "train_ce": ce,
                   "train_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
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
        labels = batch["label"]
        mask = batch.get("mask", jnp.ones(labels.shape, bool)).astype(logits.dtype)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {"loss_sum": jnp.sum(losses * mask),
                "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
                "count": jnp.sum(mask)}

    return Trainer(init=init, step=step, evaluate=evaluate, lr=lr_fn,
                   drop_path_prob=drop_fn)


def build(config: ml_collections.ConfigDict, genotype: resolve.Architecture,
          num_classes: int, steps_per_epoch: int
          ) -> tuple[NetworkCIFAR | ChainNet, Trainer]:
    """The network and the pure training functions a config describes."""
    m, o = config.model, config.optim
    common_args = dict(epochs=config.epochs, steps_per_epoch=steps_per_epoch, lr=o.lr,
                       lr_min=o.lr_min, momentum=o.momentum,
                       weight_decay=o.weight_decay, grad_clip=o.grad_clip)
    if isinstance(genotype, chain_space.ChainGenotype):
        model = build_path_network(genotype.space, genotype.path, num_classes,
                                   bn_momentum=m.bn_momentum)
        return model, trainer(model, **common_args)
    model = NetworkCIFAR(C=m.channels, num_classes=num_classes, layers=m.layers,
                         auxiliary=m.auxiliary, genotype=genotypes.validate(genotype))
    return model, trainer(model, auxiliary_weight=m.auxiliary_weight,
                          drop_path_prob=m.drop_path_prob, **common_args)


def check_data(genotype: resolve.Architecture, data: "TrainData") -> None:
    """A chain genotype records its input channels and classes: they must match."""
    if not isinstance(genotype, chain_space.ChainGenotype):
        return
    if genotype.space.in_channels != data.image_shape[-1]:
        raise ValueError(f"the chain genotype takes {genotype.space.in_channels}-channel "
                         f"images, but {data.name} has {data.image_shape[-1]}")
    if genotype.num_classes != data.num_classes:
        raise ValueError(f"the chain genotype has {genotype.num_classes} classes, but "
                         f"{data.name} has {data.num_classes}")


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


def saved_meta(workdir: str) -> dict[str, Any] | None:
    """The metadata of the newest readable checkpoint (see `checkpoint.latest_meta`)."""
    return ckpt_lib.latest_meta(workdir)


def check_resumable(config: ml_collections.ConfigDict, genotype_json: dict[str, Any],
                    meta: dict[str, Any]) -> None:
    """Refuses to resume a checkpoint of another genotype or a different config."""
    common.check_resumable(config, meta)
    if meta.get("genotype") != genotype_json:
        saved = meta.get("genotype")
        try:
            saved = (chain_space.chain_genotype_from_json(saved).describe()
                     if chain_space.is_chain_json(saved)
                     else genotypes.to_str(genotypes.from_json(saved)))
        except (ValueError, TypeError, KeyError):
            pass
        raise config_lib.ConfigError(
            f"the workdir holds a training run of another genotype ({saved}); use a "
            f"new --workdir, or pass that genotype to resume")


def run(config: ml_collections.ConfigDict, genotype: resolve.Architecture,
        workdir: str) -> dict[str, Any]:
    """Trains (or resumes) `genotype` in `workdir`; returns the result.json dict."""
    from jaxnas import data as data_lib

    if not isinstance(genotype, chain_space.ChainGenotype):
        genotype = genotypes.validate(genotype)
    genotype_json = resolve.to_json(genotype)
    description = resolve.describe(genotype)
    workdir = wd.prepare_workdir(workdir)
    lead = jax.process_index() == 0
    saved = saved_meta(workdir)
    if saved is not None:  # refuse a different run before touching the workdir
        check_resumable(config, genotype_json, saved)
    common.record_config(config, workdir, enabled=lead)
    data = load_data(config)
    check_data(genotype, data)
    b = config.data.batch_size
    steps_per_epoch = len(data.train) // b
    if steps_per_epoch == 0:
        raise ValueError(f"config.data.batch_size={b} is larger than the training "
                         f"split ({len(data.train)} images)")
    total_steps = config.epochs * steps_per_epoch
    stop = min(config.num_steps, total_steps) if config.num_steps > 0 else total_steps
    eval_every = config.eval_every * steps_per_epoch  # 0: only at the end

    model, tr = build(config, genotype, data.num_classes, steps_per_epoch)
    t0 = time.time()
    sample = jnp.zeros((1,) + data.image_shape, jnp.float32)
    state = jax.jit(tr.init)(jax.random.key(config.seed, impl=KEY_IMPL), sample)
    num_params = param_count({k: v for k, v in state.params.items() if k != AUX_HEAD})
    num_params_all = param_count(state.params)
    augment = data_lib.Augment(config.data.crop_padding, config.data.flip,
                               config.data.cutout)
    train_it = data_lib.BatchIterator(data.train.images, data.train.labels,
                                      batch_size=b, mean=data.mean, std=data.std,
                                      seed=config.seed, augment=augment)

    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    metrics_log = wd.MetricsWriter(workdir, enabled=lead)
    start = 0
    restored = checkpointer.restore(state)
    if restored is not None:
        state, meta, start = restored
        train_it.restore(meta["train_position"])
        metrics_log.truncate_after(start)
        log.info("resumed from the checkpoint at step %d", start)
    # Fresh and restored states must look alike to jit (same committed placement), or
    # a resumed run would compile the step again instead of hitting the XLA cache.
    state = jax.device_put(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    log.info("training %s: %d parameters (%d with the auxiliary head), %d steps of "
             "batch %d (%d an epoch)", description, num_params,
             num_params_all, stop, b, steps_per_epoch)

    step_fn = jax.jit(tr.step, donate_argnums=0)
    eval_fn = jax.jit(tr.evaluate)
    eval_b = config.data.eval_batch_size or b

    def meta() -> dict[str, Any]:
        return {"train_position": train_it.position(), "config": config.to_dict(),
                "genotype": genotype_json}

    def evaluate() -> dict[str, float]:
        out = common.evaluate(eval_fn, state, data.test, data, eval_b)
        return {f"test_{k}": v for k, v in out.items()}

    final = None

    def run_step() -> dict[str, float]:
        nonlocal state
        state, metrics = step_fn(state, next(train_it))
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

    def eval_record(step: int) -> dict[str, Any]:
        nonlocal final
        record = {**evaluate(), "epoch": step / steps_per_epoch}
        if step == stop:
            final = record
        log.info("step %d (epoch %.2f): test accuracy %.4f", step, record["epoch"],
                 record["test_accuracy"])
        return record

    def save(step: int, *, force: bool = False) -> None:
        checkpointer.save(step, state, meta(), force=force)

    step = common.step_loop(
        start=start, stop=stop, run_step=run_step,
        eval_due=lambda step: bool(eval_every and step % eval_every == 0) or step == stop,
        evaluate=eval_record, save=save, checkpointer=checkpointer, config=config,
        metrics_log=metrics_log, desc="train", lead=lead, t0=t0).step

    if final is None:  # resumed a finished run: the same weights give the same figures
        final = {**evaluate(), "epoch": step / steps_per_epoch}
    results = {
        "genotype": genotype_json,
        "genotype_str": description,
        "dataset": data.name,
        "num_params": num_params,
        "num_params_with_auxiliary": num_params_all,
        "test_accuracy": final["test_accuracy"],
        "test_error": 1.0 - final["test_accuracy"],
        "test_loss": final["test_loss"],
        "steps": step,
        "epochs": step / steps_per_epoch,
        "total_steps": total_steps,
    }
    if lead:
        wd.write_json(os.path.join(workdir, "result.json"), results)
        log.info("test accuracy %.4f after %d steps; results in %s (result.json, "
                 "metrics.jsonl, checkpoints/)", results["test_accuracy"], step,
                 workdir)
    return results
