"""The soft-weight chain supernet: one-hot weights are ChainSupernet at that path
(logits and the chosen blocks' BatchNorm statistics), and a layer is the weighted sum
of the gather layer's six blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.spaces import chain as space_lib
from jaxnas.supernet import chain as sn
from jaxnas.supernet.chain_mixed import ChainMixedSupernet, MixedChoiceLayer

SPACE = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                             strides=(1, 2), head_channels=8, in_channels=1)


def test_one_hot_weights_compute_the_path_and_a_layer_is_the_weighted_sum():
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    path = jnp.array([2, 5], jnp.int32)
    gather, mixed = sn.ChainSupernet(SPACE, 3), ChainMixedSupernet(SPACE, 3)
    variables = gather.init(sn.init_key(jax.random.key(1)), x, path)
    onehot = jax.nn.one_hot(path, 6)
    assert jax.tree.structure(mixed.init(jax.random.key(2), x, onehot)) == \
        jax.tree.structure(variables)

    # layer 0 (residual: 4 -> 4, stride 1): mixed(w) = sum_k w_k gather(k) for
    # weights summing to 1, eval mode, from the same stacked parameters
    spec = SPACE.layers()[0]
    h = jax.random.normal(jax.random.key(3), (4, 8, 8, 4))
    layer_vars = {c: v["layer0"] for c, v in variables.items()}
    w = jax.nn.softmax(jnp.arange(6.0) / 3)

    @jax.jit
    def both(v):
        blocks = jnp.stack([sn.ChoiceLayer(spec).apply(v, h, jnp.int32(k), False)
                            for k in range(6)])
        return (MixedChoiceLayer(spec).apply(v, h, w, False),
                jnp.einsum("k,k...->...", w, blocks))

    got, want = both(layer_vars)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)

    @jax.jit
    def nets(v):
        return (mixed.apply(v, x, onehot, train=True, mutable=["batch_stats"]),
                gather.apply(v, x, path, train=True, mutable=["batch_stats"]))

    (out, upd), (ref, ref_upd) = nets(variables)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    for l, c in enumerate(np.asarray(path)):  # the chosen blocks' statistics agree
        for name, value in ref_upd["batch_stats"][f"layer{l}"].items():
            np.testing.assert_allclose(
                np.asarray(upd["batch_stats"][f"layer{l}"][name][c]),
                np.asarray(value[c]), rtol=1e-5, atol=1e-6)
