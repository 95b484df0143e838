"""The gradient-based family's iterations beside first-order DARTS.

Records (names are a contract):
  <method>/iteration   `strategies.<method>.<method>(model, ...).step`, first-order
                       estimator, for method in METHODS (gdas, snas, fairdarts, drnas,
                       darts_minus, pcdarts, pdarts, proxyless)
  gdas/iteration/single_path
                       GDAS with the single-path forward (loop mixed op, only each
                       edge's sampled op runs)
  proxyless/iteration/two_path
                       ProxylessNAS with the paper's two sampled paths (loop mixed op,
                       only each edge's pair runs)
  proxyless/chain/iteration, proxyless/chain/iteration/two_path
                       ProxylessNAS on the chain space of experiments/zero_cost_digits.py
                       (`ChainMixedSupernet`, 3-channel --image inputs): one-path gates
                       over all six blocks, and the two sampled blocks per layer only

The suite `family` measures `darts/iteration/first_order` first, then each of these on the
same supernet and settings (jaxnas/bench/darts.py SETTINGS; the family's own values are
those of experiments/<method>_digits.py), so the figures compare side by side. SNAS' step
is single-level: one forward and backward on the training batch, no validation pass.
PC-DARTS' record always runs the loop mixed op with partial_channels=4 (the only
formulation with the channel split): compare it with `--mixed-op loop`, so that DARTS'
record runs the same formulation at full channels. GDAS' single-path record always runs
the loop mixed op; P-DARTS' record is a last-stage iteration (3 ops per edge,
PDARTS_OPS, skip dropout 0.7) on the fused mixed op when --mixed-op fused (every op
computed, the pruned ones weighted 0), else on the loop one (only the kept ops run).
ProxylessNAS' `iteration` runs one-path gates on --mixed-op (every op computed, the
unsampled ones weighted 0; no cost term); its two-path record always runs the loop.
"""

from __future__ import annotations

from typing import Any


from jaxnas.bench import common
from jaxnas.bench import darts as darts_bench
from jaxnas.strategies import darts as darts_lib

METHODS = ("gdas", "snas", "fairdarts", "drnas", "darts_minus", "pcdarts", "pdarts",
           "proxyless")
RECORDS = tuple(f"{m}/iteration" for m in METHODS) + (
    "gdas/iteration/single_path", "proxyless/iteration/two_path",
    "proxyless/chain/iteration", "proxyless/chain/iteration/two_path")
PCDARTS_K = 4  # experiments/pcdarts_digits.py's partial_channels
PDARTS_OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5")  # a last stage's 3 ops


def strategy(method: str, model: Any, s: dict = darts_bench.SETTINGS, paths: str = "all",
             **extra: Any):
    """The method's strategy with the search configs' settings and first-order DARTS'."""
    total = s["epochs"] * s["steps_per_epoch"]
    kw = dict(estimator="first_order",
              w_schedule=darts_lib.cosine_epoch_schedule(s["w_lr"], s["w_lr_min"],
                                                         s["epochs"], s["steps_per_epoch"]),
              w_momentum=s["w_momentum"], w_weight_decay=s["w_weight_decay"],
              grad_clip=s["grad_clip"],
              a_tx=darts_lib.arch_optimizer(s["a_lr"], s["a_b1"], s["a_b2"],
                                            s["a_weight_decay"]), **extra)
    if method == "gdas":
        from jaxnas.strategies.gdas import gdas
        return gdas(model, total_steps=total, tau_max=10.0, tau_min=0.1, **kw)
    if method == "snas":
        from jaxnas.strategies.snas import snas
        return snas(model, total_steps=total, tau_max=1.0, tau_min=0.03, **kw)
    if method == "fairdarts":
        from jaxnas.strategies.fairdarts import fairdarts
        return fairdarts(model, zero_one_weight=10.0, **kw)
    if method == "drnas":
        from jaxnas.strategies.drnas import drnas
        return drnas(model, kl_weight=1e-3, anchor=1.0, **kw)
    if method == "darts_minus":
        from jaxnas.strategies.darts_minus import darts_minus
        return darts_minus(model, total_steps=total, beta_max=1.0, beta_min=0.0, **kw)
    if method == "pcdarts":
        from jaxnas.strategies.pcdarts import pcdarts
        return pcdarts(model, **kw)
    if method == "pdarts":
        from jaxnas.strategies import pdarts
        edges = model.edge_ops[0]
        rate = pdarts.dropout_schedule(0.7, s["epochs"], 0, s["steps_per_epoch"])
        return pdarts.pdarts_stage(model, ops=(edges, edges), skip_rate=rate,
                                   max_skips=2, **kw)
    if method == "proxyless":
        from jaxnas.strategies.proxyless import proxyless
        return proxyless(model, paths=paths, **kw)
    raise ValueError(f"unknown family record method {method!r}: expected one of {METHODS}")


def case(name: str, args: Any) -> common.Case:
    """The function and placed arguments of record `name` (`<method>/iteration`)."""
    if name not in RECORDS:
        raise ValueError(f"unknown family record {name!r}: expected one of {RECORDS}")
    method = name.partition("/")[0]
    placement = common.Placement(args.devices)
    if "/chain/" in name:
        return _chain_case(name, args, placement)
    model = darts_bench.build_model(args)
    if method == "pcdarts":
        model = model.clone(mixed_op="loop", partial_channels=PCDARTS_K)
    if name.endswith("single_path"):
        model = model.clone(mixed_op="loop", single_path=True)
    two_path = name.endswith("two_path")
    if two_path:
        model = model.clone(mixed_op="loop")
    if method == "pdarts":
        from jaxnas.spaces import cells
        edges = tuple(PDARTS_OPS for _ in range(cells.num_edges(model.steps)))
        model = model.clone(mixed_op=(model.mixed_op if model.mixed_op in ("fused", "edges")
                                      else "loop"),
                            edge_ops=(edges, edges))
    strat = strategy(method, model, paths="two" if two_path else "all")
    image, state, train, val, n_params = darts_bench.placed_state(strat, args, placement)
    config = dict(method=method, estimator="first_order", channels=args.channels,
                  layers=args.layers, nodes=args.nodes, batch=args.batch,
                  image=[image, image, 3], num_classes=args.num_classes,
                  mixed_op=model.mixed_op, impl=args.impl, params=n_params,
                  partial_channels=model.partial_channels,
                  single_path=model.single_path,
                  paths=("two" if two_path else "all") if method == "proxyless" else None,
                  devices=args.devices, repeats=args.repeats, warmup=args.warmup,
                  settings=darts_bench.SETTINGS)
    return common.Case(strat.step, (state, train, val), args.batch, placement.devices,
                       config, lambda r: {"images_per_s": r["items_per_s"]}, "first")


def _chain_case(name: str, args: Any, placement: common.Placement) -> common.Case:
    """ProxylessNAS on the digits chain space (the zero-cost search's layers)."""
    import os

    from jaxnas import config as config_lib
    from jaxnas.runners import supernets

    # a repository file, not an installed module (as every example config)
    path = os.path.join(os.path.dirname(__file__), "..", "..", "experiments",
                        "zero_cost_digits.py")
    m = config_lib.load_config(path).model
    with m.unlocked():
        m.space, m.in_channels = "chain", 3
    model, space = supernets.build(m, args.num_classes)
    paths = "two" if name.endswith("two_path") else "all"
    strat = strategy("proxyless", model, paths=paths, space=space)
    image, state, train, val, n_params = darts_bench.placed_state(strat, args, placement)
    config = dict(method="proxyless", space="chain", paths=paths, estimator="first_order",
                  widths=list(m.widths), depths=list(m.depths), batch=args.batch,
                  image=[image, image, 3], num_classes=args.num_classes, params=n_params,
                  devices=args.devices, repeats=args.repeats, warmup=args.warmup,
                  settings=darts_bench.SETTINGS)
    return common.Case(strat.step, (state, train, val), args.batch, placement.devices,
                       config, lambda r: {"images_per_s": r["items_per_s"]}, "first")
