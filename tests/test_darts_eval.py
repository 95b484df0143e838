"""Tests for jaxnas.networks.darts_eval: reference parameter counts, tiny forwards."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.networks import darts_eval
from jaxnas.spaces import genotypes, ops


def _key(seed: int) -> jax.Array:
    # 'rbg' keys: far fewer compiles than threefry when initialising eagerly.
    return jax.random.key(seed, impl="rbg")


@pytest.mark.parametrize("genotype,auxiliary,expected", [
    (genotypes.DARTS_V2, False, 3349342),
    (genotypes.DARTS_V2, True, 3825768),
    (genotypes.DARTS_V1, False, 3169414),
])
def test_reference_parameter_counts(genotype, auxiliary, expected):
    # The figures of the reference PyTorch DARTS (C=36, 20 layers, CIFAR-10).
    assert darts_eval.count_parameters(genotype, 36, 20, 10, auxiliary) == expected


# A tiny genotype: 2-node normal cell, 3-node reduction cell whose concat skips node 3.
TINY = genotypes.Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1),
            ("dil_conv_5x5", 2), ("max_pool_3x3", 0)),
    normal_concat=(2, 3),
    reduce=(("skip_connect", 0), ("sep_conv_5x5", 1),
            ("avg_pool_3x3", 2), ("skip_connect", 2),
            ("dil_conv_3x3", 3), ("none", 0)),
    reduce_concat=(2, 4),
)


def _tiny_count_by_hand(num_classes: int, auxiliary: bool) -> int:
    """TINY at C=4, 3 layers, written out from the op definitions."""
    bn = lambda c: 2 * c  # noqa: E731  affine BatchNorm: scale + bias
    relu_conv_bn_1x1 = lambda ci, co: ci * co + bn(co)  # noqa: E731
    fact_reduce = lambda ci, co: 2 * ci * (co // 2) + bn(co)  # noqa: E731
    dil_conv = lambda k, c: k * k * c + c * c + bn(c)  # noqa: E731  dw + pw + BN
    sep_conv = lambda k, c: 2 * dil_conv(k, c)  # noqa: E731
    stem = 3 * 3 * 3 * 12 + bn(12)  # conv 3->3C, C=4
    # cell 0, normal, C=4, inputs 12/12: sep3, skip(identity), dil5, max pool
    cell0 = (relu_conv_bn_1x1(12, 4) + relu_conv_bn_1x1(12, 4)
             + sep_conv(3, 4) + 0 + dil_conv(5, 4) + 0)
    # cell 1, reduction (layers // 3 = 1), C=8, inputs 12 / 2*4 = 8:
    # skip from input 0 is FactorizedReduce, sep5 stride 2, avg pool, identity, dil3
    cell1 = (relu_conv_bn_1x1(12, 8) + relu_conv_bn_1x1(8, 8)
             + fact_reduce(8, 8) + sep_conv(5, 8) + 0 + 0 + dil_conv(3, 8) + 0)
    # cell 2, reduction (2 * layers // 3 = 2) after a reduction, C=16, inputs 8 / 16
    cell2 = (fact_reduce(8, 16) + relu_conv_bn_1x1(16, 16)
             + fact_reduce(16, 16) + sep_conv(5, 16) + dil_conv(3, 16))
    c_last = 2 * 16  # two concatenated nodes
    classifier = c_last * num_classes + num_classes
    total = stem + cell0 + cell1 + cell2 + classifier
    if auxiliary:  # on the output of cell 2
        total += (c_last * 128 + bn(128) + 128 * 768 * 2 * 2 + bn(768)
                  + 768 * num_classes + num_classes)
    return total


@pytest.mark.parametrize("auxiliary", [False, True])
def test_tiny_parameter_count_by_hand(auxiliary):
    expected = _tiny_count_by_hand(7, auxiliary)
    assert expected == {False: 4463, True: 4463 + 404487}[auxiliary]  # summed by hand
    assert darts_eval.count_parameters(TINY, 4, 3, 7, auxiliary) == expected


@pytest.fixture(scope="module")
def tiny_net():
    """DARTS_V2 at C=4, 3 layers, aux head, drop path 0.2; initialised in eval mode."""
    model = darts_eval.NetworkCIFAR(4, 10, 3, True, genotypes.DARTS_V2,
                                    drop_path_prob=0.2)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    variables = jax.jit(model.init, static_argnames="train")(_key(0), x, train=False)
    return model, variables, x


def _train(model, variables, x, key, drop_path_prob):
    """A jitted train-mode forward, drop_path_prob traced: ((logits, aux), updates)."""
    fn = jax.jit(lambda v, x, k, p: model.apply(
        v, x, True, drop_path_prob=p, mutable=["batch_stats"], rngs={"dropout": k}))
    return fn(variables, x, key, jnp.float32(drop_path_prob))


def test_init_matches_eval_shape_count(tiny_net):
    model, variables, _ = tiny_net
    params = variables["params"]
    assert "auxiliary_head" in params  # built even though init ran in eval mode
    assert darts_eval.param_count(params) == darts_eval.count_parameters(
        genotypes.DARTS_V2, 4, 3, 10, auxiliary=True)
    no_aux = {k: v for k, v in params.items() if k != "auxiliary_head"}
    assert darts_eval.param_count(no_aux) == darts_eval.count_parameters(
        genotypes.DARTS_V2, 4, 3, 10, auxiliary=False)


def test_forward_eval_has_no_aux_and_is_deterministic(tiny_net):
    model, variables, x = tiny_net
    eval_fn = jax.jit(lambda v, x: model.apply(v, x, False))
    logits, aux = eval_fn(variables, x)
    assert logits.shape == (2, 10) and aux is None
    assert bool(jnp.all(jnp.isfinite(logits)))
    again, _ = eval_fn(variables, x + 0.0)
    np.testing.assert_array_equal(logits, again)


def test_forward_train_with_aux_and_drop_path(tiny_net):
    model, variables, x = tiny_net
    (logits, aux), updates = _train(model, variables, x, _key(1), 0.2)
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    assert bool(jnp.all(jnp.isfinite(logits))) and bool(jnp.all(jnp.isfinite(aux)))
    old = variables["batch_stats"]["stem_bn"]["mean"]
    assert not np.allclose(updates["batch_stats"]["stem_bn"]["mean"], old)
    (other, _), _ = _train(model, variables, x, _key(2), 0.2)
    assert not np.allclose(logits, other)  # different drop-path masks
    # a traced probability of 0 (e.g. the first epoch of a schedule) drops nothing
    (p0_a, _), _ = _train(model, variables, x, _key(1), 0.0)
    (p0_b, _), _ = _train(model, variables, x, _key(2), 0.0)
    np.testing.assert_array_equal(p0_a, p0_b)


def test_forward_train_without_aux_or_drop_path(tiny_net):
    _, variables, x = tiny_net
    model = darts_eval.NetworkCIFAR(4, 10, 3, False, genotypes.DARTS_V2)
    # drop_path_prob 0: no 'dropout' rng needed; the unused aux params are ignored.
    (logits, aux), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 10) and aux is None
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_drop_path_masks_whole_samples_and_rescales():
    x = jnp.ones((64, 2, 2, 3))
    y = np.asarray(darts_eval.drop_path(x, 0.25, _key(3)))
    per_sample = y.reshape(64, -1)
    assert np.all(per_sample == per_sample[:, :1])  # one decision per sample
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
    kept = np.mean(per_sample[:, 0] > 0)
    assert 0.5 < kept < 0.95  # Bernoulli(0.75) over 64 samples


def test_invalid_genotype_is_refused():
    bad = genotypes.DARTS_V2._replace(normal_concat=(2, 3, 9))
    with pytest.raises(ValueError, match="normal_concat"):
        darts_eval.count_parameters(bad, 4, 3)


# ----------------------------------------------------------------------------------
# NetworkCIFAR's wiring against an independent loop over the genotype's ops.


def _bn_eval(x, params, stats):
    return ((x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * params["scale"]
            + params["bias"])


def _op(name, stride, c, params, stats, x):
    """One genotype op as DARTS defines it; parameter-free ops written out here."""
    if name == "none":
        return jnp.zeros_like(x[:, ::stride, ::stride, :])
    if name == "skip_connect" and stride == 1:
        return x
    if name == "max_pool_3x3":
        return ops.max_pool_3x3(x, stride)
    if name == "avg_pool_3x3":
        return ops.avg_pool_3x3(x, stride)
    module = (ops.FactorizedReduce(c, c) if name == "skip_connect"
              else ops.OPS[name](c, stride, True))
    return module.apply({"params": params, "batch_stats": stats}, x, False)


def _reference_forward(variables, x, genotype, C, layers):
    """DARTS' NetworkCIFAR.forward (eval mode, no auxiliary head) as a plain loop over
    the genotype, reading the network's parameters by their names."""
    P, S = variables["params"], variables["batch_stats"]
    s = jax.lax.conv_general_dilated(x, P["stem_conv"]["kernel"], (1, 1),
                                     ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    s0 = s1 = _bn_eval(s, P["stem_bn"], S["stem_bn"])
    c, reduction_prev = C, False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if reduction else c
        p, st = P[f"cell{i}"], S[f"cell{i}"]

        def pre(name, module, inp):
            return module.apply({"params": p[name], "batch_stats": st[name]}, inp, False)

        states = [pre("preprocess0", ops.FactorizedReduce(s0.shape[-1], c)
                      if reduction_prev else ops.ReLUConvBN(s0.shape[-1], c, 1, 1, 0),
                      s0),
                  pre("preprocess1", ops.ReLUConvBN(s1.shape[-1], c, 1, 1, 0), s1)]
        edges, concat = ((genotype.reduce, genotype.reduce_concat) if reduction
                         else (genotype.normal, genotype.normal_concat))
        for node in range(len(edges) // 2):
            total = 0.0
            for e in (2 * node, 2 * node + 1):
                name, source = edges[e]
                stride = 2 if reduction and source < 2 else 1
                total = total + _op(name, stride, c, p.get(f"op{e}", {}),
                                    st.get(f"op{e}", {}), states[source])
            states.append(total)
        s0, s1 = s1, jnp.concatenate([states[k] for k in concat], axis=-1)
        reduction_prev = reduction
    pooled = s1.mean(axis=(1, 2))
    return pooled @ P["classifier"]["kernel"] + P["classifier"]["bias"]


def _miswire(genotype, cell, edge, new):
    edges = list(getattr(genotype, cell))
    edges[edge] = new
    return genotype._replace(**{cell: tuple(edges)})


def test_forward_matches_a_loop_over_the_genotype_ops():
    """Every op reads the state its genotype edge names, at the right stride, and
    cells, preprocessing, concatenation and classifier are wired as in DARTS; a
    miswired parameter-free op (a pooling or skip edge reading another state, or
    another parameter-free op) changes the output."""
    C, layers = 4, 5  # reductions at cells 1 and 3, normal cells after each
    model = darts_eval.NetworkCIFAR(C, 10, layers, False, TINY)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
    variables = jax.jit(model.init, static_argnames="train")(_key(5), x, train=False)
    # non-trivial BatchNorm statistics and affine terms, so that every one matters
    def perturb(where, a):
        var = jax.tree_util.keystr(where).endswith("'var']")
        noise = rng.uniform(0.5, 1.5, a.shape) if var else 0.1 * rng.normal(size=a.shape)
        return jnp.asarray(noise, jnp.float32)

    stats = jax.tree_util.tree_map_with_path(perturb, variables["batch_stats"])
    params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rng.normal(size=a.shape),
                                                          jnp.float32),
                          variables["params"])
    variables = {"params": params, "batch_stats": stats}
    logits, _ = jax.jit(lambda v, x: model.apply(v, x, False))(variables, x)
    want = _reference_forward(variables, x, TINY, C, layers)
    np.testing.assert_allclose(logits, want, rtol=2e-5, atol=2e-5)
    # the reference is sensitive to the wiring of parameter-free ops
    for wrong in (_miswire(TINY, "normal", 1, ("skip_connect", 0)),   # skip reads s0
                  _miswire(TINY, "normal", 3, ("max_pool_3x3", 1)),   # pool reads s1
                  _miswire(TINY, "normal", 3, ("avg_pool_3x3", 0)),   # other pooling
                  _miswire(TINY, "reduce", 3, ("none", 2)),           # skip dropped
                  _miswire(TINY, "reduce", 2, ("max_pool_3x3", 2))):  # other pooling
        other = _reference_forward(variables, x, wrong, C, layers)
        assert np.max(np.abs(np.asarray(other) - np.asarray(logits))) > 1e-3, wrong
