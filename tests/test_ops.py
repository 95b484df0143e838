"""Tests for jaxnas.spaces.ops: shapes, pooling padding rules, convs against numpy."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces import ops

ALL_OPS = tuple(ops.OPS)


def _key(seed: int) -> jax.Array:
    # 'rbg' keys: far fewer compiles than threefry when initialising eagerly.
    return jax.random.key(seed, impl="rbg")


def _init_apply(module, x, train=False):
    variables = module.init(_key(0), x, train)
    if train:
        y, _ = module.apply(variables, x, train, mutable=["batch_stats"])
    else:
        y = module.apply(variables, x, train)
    return variables, y


def _n_params(variables) -> int:
    return sum(math.prod(p.shape)
               for p in jax.tree_util.tree_leaves(variables.get("params", {})))


def _np_pool(x: np.ndarray, stride: int, reduce) -> np.ndarray:
    """Brute-force 3x3 pool, padding 1, over the valid (unpadded) cells only."""
    n, h, w, c = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, ho, wo, c), x.dtype)
    for i in range(ho):
        for j in range(wo):
            ci, cj = i * stride, j * stride
            win = x[:, max(ci - 1, 0):ci + 2, max(cj - 1, 0):cj + 2, :]
            out[:, i, j, :] = reduce(win.reshape(n, -1, c), axis=1)
    return out


def test_primitives_order_is_the_darts_contract():
    assert ops.PRIMITIVES == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                              "dil_conv_5x5")
    assert set(ops.OPS) == set(ops.PRIMITIVES) | {"sep_conv_7x7", "conv_7x1_1x7"}


@pytest.mark.parametrize("name", ALL_OPS)
def test_op_output_shapes(name):
    x = np.random.default_rng(1).normal(size=(2, 6, 5, 4))  # even H, odd W
    x = jnp.asarray(x, jnp.float32)
    for stride in (1, 2):
        _, y = _init_apply(ops.OPS[name](4, stride, True), x, train=True)
        expected = (2, -(-6 // stride), -(-5 // stride), 4)  # ceil(size / stride)
        assert y.shape == expected, (name, stride)
        assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("name,expected", [
    # sep conv k: 2 x (depthwise k*k*C + pointwise C*C + BN 2C), C = 4
    ("sep_conv_3x3", 2 * (9 * 4 + 16 + 8)),
    ("sep_conv_5x5", 2 * (25 * 4 + 16 + 8)),
    ("sep_conv_7x7", 2 * (49 * 4 + 16 + 8)),
    ("dil_conv_3x3", 9 * 4 + 16 + 8),
    ("dil_conv_5x5", 25 * 4 + 16 + 8),
    ("conv_7x1_1x7", 7 * 16 + 7 * 16 + 8),
    ("max_pool_3x3", 0), ("avg_pool_3x3", 0), ("none", 0),
])
def test_op_parameter_counts(name, expected):
    x = jnp.ones((1, 6, 6, 4))
    variables, _ = _init_apply(ops.OPS[name](4, 1, True), x)
    assert _n_params(variables) == expected


def test_skip_connect_identity_and_reduce_params():
    x = jnp.ones((1, 6, 6, 4))
    v1, y1 = _init_apply(ops.OPS["skip_connect"](4, 1, True), x)
    assert _n_params(v1) == 0 and bool(jnp.all(y1 == x))
    v2, _ = _init_apply(ops.OPS["skip_connect"](4, 2, True), x)
    assert _n_params(v2) == 2 * 4 * 2 + 2 * 4  # two 1x1 convs 4->2, affine BN


def test_non_affine_ops_have_no_bn_params():
    x = jnp.ones((1, 6, 6, 4))
    variables, _ = _init_apply(ops.OPS["dil_conv_3x3"](4, 1, False), x)
    assert _n_params(variables) == 9 * 4 + 16
    assert "batch_stats" in variables


def test_avg_pool_excludes_padding_constant_input():
    y = ops.avg_pool_3x3(jnp.ones((1, 5, 5, 2)), 1)
    assert bool(jnp.all(y == 1.0))  # count_include_pad=True would give 4/9 at corners
    y2 = ops.avg_pool_3x3(jnp.ones((1, 5, 5, 2)), 2)
    assert y2.shape == (1, 3, 3, 2) and bool(jnp.all(y2 == 1.0))


def test_avg_pool_ramp_against_hand_and_brute_force():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # x[h, w] = 4h + w
    y = np.asarray(ops.avg_pool_3x3(jnp.asarray(x), 1))
    assert y[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert y[0, 0, 1, 0] == pytest.approx((0 + 1 + 2 + 4 + 5 + 6) / 6)
    assert y[0, 1, 1, 0] == pytest.approx(sum([0, 1, 2, 4, 5, 6, 8, 9, 10]) / 9)
    r = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
    for s in (1, 2):
        np.testing.assert_allclose(ops.avg_pool_3x3(jnp.asarray(r), s),
                                   _np_pool(r, s, np.mean), rtol=1e-5, atol=1e-6)


def test_max_pool_pads_with_minus_inf():
    x = -1.0 - np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # all negative
    y = np.asarray(ops.max_pool_3x3(jnp.asarray(x), 1))
    assert y[0, 0, 0, 0] == -1.0  # zero padding would give 0
    assert y[0, 3, 3, 0] == x[0, 2, 2, 0] == -11.0
    for s in (1, 2):
        np.testing.assert_array_equal(ops.max_pool_3x3(jnp.asarray(x), s),
                                      _np_pool(x, s, np.max))
    assert bool(jnp.all(ops.max_pool_3x3(jnp.asarray(x), 2) < 0))


def test_zero_op_strides_and_is_zero():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 7, 3)), jnp.float32)
    y1 = ops.Zero(1).apply({}, x)
    y2 = ops.Zero(2).apply({}, x)
    assert y1.shape == x.shape and y2.shape == (2, 3, 4, 3)
    assert not bool(jnp.any(y1)) and not bool(jnp.any(y2))


def _np_depthwise(x, k, stride, dilation, pad):
    """Direct-sum depthwise conv: out[n,i,j,c] = sum_ab x[n, si+da-p, sj+db-p, c] w."""
    n, h, w, c = x.shape
    kh, kw = k.shape[:2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, ho, wo, c), np.float64)
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    out[:, i, j, :] += (xp[:, i * stride + a * dilation,
                                           j * stride + b * dilation, :] * k[a, b, 0])
    return out


@pytest.mark.parametrize("k,stride,dilation,pad", [(3, 1, 1, 1), (5, 2, 1, 2),
                                                   (3, 2, 2, 2), (5, 1, 2, 4)])
def test_depthwise_conv_matches_direct_sum(k, stride, dilation, pad):
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    w = rng.normal(size=(k, k, 1, 3)).astype(np.float32)
    y = ops.depthwise_conv(jnp.asarray(x), jnp.asarray(w), stride, dilation, pad)
    np.testing.assert_allclose(y, _np_depthwise(x, w, stride, dilation, pad),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hw", [6, 5])
def test_factorized_reduce_against_numpy(hw):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, hw, hw, 3)).astype(np.float32)
    module = ops.FactorizedReduce(3, 4, True)
    variables = module.init(_key(0), jnp.asarray(x), False)
    y = np.asarray(module.apply(variables, jnp.asarray(x), False))
    ho = -(-hw // 2)
    assert y.shape == (2, ho, ho, 4)
    p = variables["params"]
    w1 = np.asarray(p["conv_1"]["kernel"])[0, 0]  # (3, 2)
    w2 = np.asarray(p["conv_2"]["kernel"])[0, 0]
    r = np.maximum(x, 0)
    a = r[:, ::2, ::2] @ w1
    b = np.zeros_like(a)
    b2 = r[:, 1:, 1:][:, ::2, ::2] @ w2
    b[:, :b2.shape[1], :b2.shape[2]] = b2  # odd H: zero rows at the end
    # eval mode with fresh running stats (mean 0, var 1), scale 1, bias 0
    expected = np.concatenate([a, b], -1) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_batchnorm_train_normalises_and_updates_running_stats():
    x = 3.0 + 2.0 * np.random.default_rng(3).normal(size=(4, 6, 6, 4))
    x = jnp.asarray(x, jnp.float32)
    module = ops.ReLUConvBN(4, 4, 1, 1, 0, False)
    variables = module.init(_key(1), x, True)
    y, updates = module.apply(variables, x, True, mutable=["batch_stats"])
    np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.var(y, axis=(0, 1, 2)), 1.0, rtol=1e-2)
    w = np.asarray(variables["params"]["conv"]["kernel"])[0, 0]
    pre_bn = np.maximum(np.asarray(x), 0) @ w
    # PyTorch momentum 0.1: running mean 0 -> 0.9 * 0 + 0.1 * batch mean
    np.testing.assert_allclose(updates["batch_stats"]["bn"]["mean"],
                               0.1 * pre_bn.mean(axis=(0, 1, 2)), rtol=1e-4)


def test_wrong_input_channels_are_refused():
    with pytest.raises(ValueError, match="expected 4 input channels, got 3"):
        ops.SepConv(4, 4, 3, 1, 1).init(_key(0), jnp.ones((1, 5, 5, 3)))


def test_pool_gradients_match_brute_force():
    # The search supernet differentiates through pooling.
    x = np.random.default_rng(4).permutation(20).astype(np.float32).reshape(1, 4, 5, 1)
    n_max = np.zeros_like(x)  # how many 3x3 windows each (distinct) value wins
    n_avg = np.zeros_like(x)  # sum over windows containing it of 1 / window size
    for i in range(4):
        for j in range(5):
            rows, cols = slice(max(i - 1, 0), i + 2), slice(max(j - 1, 0), j + 2)
            win = x[0, rows, cols, 0]
            a, b = np.unravel_index(np.argmax(win), win.shape)
            n_max[0, rows.start + a, cols.start + b, 0] += 1
            n_avg[0, rows, cols, 0] += 1.0 / win.size
    g_max = jax.grad(lambda v: jnp.sum(ops.max_pool_3x3(v, 1)))(jnp.asarray(x))
    g_avg = jax.grad(lambda v: jnp.sum(ops.avg_pool_3x3(v, 1)))(jnp.asarray(x))
    np.testing.assert_array_equal(g_max, n_max)
    np.testing.assert_allclose(g_avg, n_avg, rtol=1e-6)


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_pytorch_batchnorm2d(affine):
    """ops.BatchNorm against numpy: PyTorch's BatchNorm2d normalises with the biased batch
    variance and averages the unbiased one into the running variance; flax's variable
    names are kept (params scale/bias only when affine; batch_stats mean/var)."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (3, 4, 5, 6)).astype(np.float32)
    bn = ops.batch_norm(True, affine)
    variables = bn.init(jax.random.key(0), jnp.asarray(x))
    assert set(variables["batch_stats"]) == {"mean", "var"}
    assert set(variables.get("params", {})) == ({"scale", "bias"} if affine else set())
    ref_vars = nn.BatchNorm(use_running_average=False, use_scale=affine,
                            use_bias=affine).init(jax.random.key(0), jnp.asarray(x))
    assert jax.tree.map(jnp.shape, ref_vars) == jax.tree.map(jnp.shape, variables)
    y, updates = bn.apply(variables, jnp.asarray(x), mutable=["batch_stats"])
    mean = x.mean(axis=(0, 1, 2))
    biased = x.var(axis=(0, 1, 2))
    unbiased = x.var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(biased + 1e-5), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * unbiased,
                               rtol=1e-5)
    stats = {"mean": jnp.asarray(mean), "var": jnp.asarray(unbiased)}
    y_eval = ops.batch_norm(False, affine).apply(
        {**variables, "batch_stats": stats}, jnp.asarray(x))
    np.testing.assert_allclose(y_eval, (x - mean) / np.sqrt(unbiased + 1e-5), rtol=1e-4,
                               atol=1e-5)
