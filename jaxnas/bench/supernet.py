"""Formulations suite: DARTS search supernet forward+backward, one mixed-op form each.

  jaxnas bench --suite formulations            # C=16, 8 cells, batch 32 of 32x32x3
  jaxnas bench --suite formulations --channels 4 --layers 3 --batch 2 --image 8
  python -m jaxnas.bench.supernet ...                    # the same (the old entry point)

Records ``supernet/fwd_bwd/<variant>`` for each of ``--variants`` (default scan, fused,
loop; see `jaxnas.supernet.darts`): the weight gradient of the cross-entropy at uniform
architecture weights, so the formulations are compared on the same function.
"""

from __future__ import annotations

import sys
from typing import Any

PREFIX = "supernet/fwd_bwd/"


def case(name: str, args: Any):
    """The function and placed arguments of one formulation's record."""
    import jax
    import optax

    from jaxnas.bench import common
    from jaxnas.supernet.darts import DartsSupernet, init_key, uniform_arch

    mixed_op = name[len(PREFIX):]
    placement = common.Placement(args.devices)
    image = args.image or 32
    model = DartsSupernet(channels=args.channels, layers=args.layers, steps=args.nodes,
                          multiplier=args.nodes, num_classes=args.num_classes,
                          mixed_op=mixed_op, impl=args.impl)
    batch = common.synthetic_batch(0, args.batch, image, 3, args.num_classes)
    arch = uniform_arch(args.nodes)
    variables = jax.jit(lambda k, x: model.init(k, x, arch))(init_key(0), batch["image"])

    def fwd_bwd(params, stats, arch, batch):
        def loss(p):
            logits, upd = model.apply({"params": p, "batch_stats": stats}, batch["image"],
                                      arch, train=True, mutable=["batch_stats"])
            ce = optax.softmax_cross_entropy_with_integer_labels(
                logits, batch["label"]).mean()
            return ce, upd

        (value, upd), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return value, grads, upd

    fn_args = (placement.replicated(variables["params"]),
               placement.replicated(variables["batch_stats"]), placement.replicated(arch),
               placement.batch(batch))
    config = dict(channels=args.channels, layers=args.layers, nodes=args.nodes,
                  batch=args.batch, image=[image, image, 3], num_classes=args.num_classes,
                  impl=args.impl, mixed_op=mixed_op,
                  params=common.param_count(variables["params"]), devices=args.devices,
                  repeats=args.repeats, warmup=args.warmup)
    return common.Case(fwd_bwd, fn_args, args.batch, placement.devices, config,
                       lambda r: {"images_per_s": r["items_per_s"]})


def main(argv: list[str] | None = None) -> int:
    """`python -m jaxnas.bench.supernet ARGS` = `jaxnas bench --suite formulations
    ARGS`."""
    from jaxnas.bench import runner

    argv = list(sys.argv[1:] if argv is None else argv)
    return runner.main(["--suite", "formulations", *argv])


if __name__ == "__main__":
    sys.exit(main())
