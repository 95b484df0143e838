"""Kernels suite: the DARTS supernet's depthwise-convolution and pooling kernels alone.

  jaxnas bench --suite kernels                   # batch 32 x 32x32x16, 4 edges
  jaxnas bench --suite kernels --kernel-impls slices,taps,lax
  jaxnas bench --suite kernels --batch 2 --image 8 --channels 4 --repeats 1

Records ``kernels/<kernel>/<impl>``: forward + backward (`jax.vjp` with a fixed
cotangent) of one kernel of `jaxnas.supernet.kernels` in one implementation, at the
shapes of a fused edge group in the first cells of the DARTS supernet (input
batch x image x image x channels, 4 edges):
  first_layer     the first depthwise layer of the 4 conv candidates of 4 edges (stride 1)
  first_layer_s2  the same at stride 2 (reduction cells)
  second_layer_k3 / second_layer_k5  the second depthwise layer of sep_conv 3x3 / 5x5,
                  one kernel per stacked edge
  max_pool        the 3x3 max pool: "slices" (`kernels.max_pool_3x3`) and
                  "reduce_window" (`lax.reduce_window`, autodiff), whatever --kernel-impls
"""

from __future__ import annotations

from typing import Any

PREFIX = "kernels/"
KERNELS = ("first_layer", "first_layer_s2", "second_layer_k3", "second_layer_k5", "max_pool")
EDGES = 4
SPECS = ((3, 1), (5, 1), (3, 2), (5, 2))  # sep 3x3, sep 5x5, dil 3x3, dil 5x5


def case(name: str, args: Any):
    """The function and arguments of one kernel record."""
    import jax
    import jax.numpy as jnp

    from jaxnas.bench import common
    from jaxnas.spaces import ops as ops_lib
    from jaxnas.supernet import kernels

    kernel, impl = name[len(PREFIX):].split("/")
    n, hw, c = args.batch, args.image or 32, args.channels
    key = jax.random.key(0)
    x = jax.random.normal(key, (n, hw, hw, c))
    if kernel.startswith("first_layer"):
        stride = 2 if kernel.endswith("s2") else 1
        ws = tuple(jax.random.normal(jax.random.fold_in(key, i), (EDGES, k * k, c))
                   for i, (k, _) in enumerate(SPECS))

        def fn(x, ws):
            return kernels.multi_depthwise(x, ws, SPECS, stride, impl)
        fn_args = (x, ws)
    elif kernel.startswith("second_layer"):
        k = int(kernel[-1])
        xs = jax.random.normal(key, (EDGES, n, hw, hw, c))
        w = jax.random.normal(jax.random.fold_in(key, 1), (EDGES, k * k, c))

        def fn(x, w):
            return kernels.stacked_depthwise(x, w, k, 1, impl)
        fn_args = (xs, w)
    elif kernel == "max_pool":
        pool = {"slices": kernels.max_pool_3x3,
                "reduce_window": ops_lib.max_pool_3x3_reduce_window}[impl]

        def fn(x):
            return pool(x, 1)
        fn_args = (x,)
    else:
        raise ValueError(f"unknown kernel record {name!r}: expected kernels/<kernel>/<impl> "
                         f"with kernel one of {', '.join(KERNELS)}")
    out = jax.eval_shape(fn, *fn_args)
    cotangent = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)

    def fwd_bwd(cotangent, *a):  # an argument, not a constant XLA would fold
        y, vjp = jax.vjp(fn, *a)
        return y, vjp(cotangent)

    fn_args = (cotangent, *fn_args)

    config = dict(kernel=kernel, impl=impl, batch=n, image=[hw, hw, c], edges=EDGES,
                  repeats=args.repeats, warmup=args.warmup)
    return common.Case(fwd_bwd, fn_args, n, jax.devices()[:1], config,
                       lambda r: {"images_per_s": r["items_per_s"]})
