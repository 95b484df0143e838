"""The DARTS search supernet: fused mixed op == reference ops, wiring, no re-trace."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces import cells
from jaxnas.spaces.ops import PRIMITIVES
from jaxnas.supernet import darts as sn
from jaxnas.supernet import kernels

C, N, H = 4, 2, 8


def _loop_params_from_fused(fp, g, stride):
    """The reference ops' parameters for edge `g` of a fused group's stacked params."""
    def dw(name):
        k = int(np.sqrt(fp[name].shape[1]))
        return fp[name][g].reshape(k, k, 1, C)

    out = {
        "sep_conv_3x3": {
            "block1": {"depthwise": dw("sep_conv_3x3_dw1"),
                       "pointwise": {"kernel": fp["pw1"][g, 0][None, None]}},
            "block2": {"depthwise": dw("sep_conv_3x3_dw2"),
                       "pointwise": {"kernel": fp["sep_conv_3x3_pw2"][g][None, None]}}},
        "sep_conv_5x5": {
            "block1": {"depthwise": dw("sep_conv_5x5_dw1"),
                       "pointwise": {"kernel": fp["pw1"][g, 1][None, None]}},
            "block2": {"depthwise": dw("sep_conv_5x5_dw2"),
                       "pointwise": {"kernel": fp["sep_conv_5x5_pw2"][g][None, None]}}},
        "dil_conv_3x3": {"depthwise": dw("dil_conv_3x3_dw1"),
                         "pointwise": {"kernel": fp["pw1"][g, 2][None, None]}},
        "dil_conv_5x5": {"depthwise": dw("dil_conv_5x5_dw1"),
                         "pointwise": {"kernel": fp["pw1"][g, 3][None, None]}},
    }
    if stride == 2:
        out["skip_connect"] = {
            "conv_1": {"kernel": fp["skip_reduce"]["kernel_1"][g][None, None]},
            "conv_2": {"kernel": fp["skip_reduce"]["kernel_2"][g][None, None]}}
    return out


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("impl", ["slices", "taps", "lax"])
def test_fused_group_equals_reference_ops(stride, impl):
    """Every edge of a fused group computes sum_k w_k op_k(x) with the reference ops."""
    g = 3
    key = jax.random.key(0)
    x = jax.random.normal(key, (N, H, H, C))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (g, len(PRIMITIVES))), -1)
    fused = sn.FusedEdgeGroup(g, C, stride, impl=impl)
    fv = fused.init(jax.random.key(2), x, w, True)
    out, _ = fused.apply(fv, x, w, True, mutable=["batch_stats"])
    assert out.shape == (g, N, H // stride, H // stride, C)
    loop = sn.LoopMixedOp(C, stride)
    lv = loop.init(jax.random.key(3), x, w[0], True)
    for e in range(g):
        params = dict(lv["params"])
        params.update(_loop_params_from_fused(fv["params"], e, stride))
        ref, _ = loop.apply({"params": params, "batch_stats": lv["batch_stats"]}, x, w[e],
                            True, mutable=["batch_stats"])
        np.testing.assert_allclose(out[e], ref, rtol=2e-4, atol=2e-5)


def test_multi_depthwise_taps_equals_grouped_conv():
    key = jax.random.key(0)
    x = jax.random.normal(key, (N, 9, 9, C))  # odd size: strided windows at the border
    specs = [(3, 1), (5, 1), (3, 2), (5, 2)]
    ks = [jax.random.normal(jax.random.fold_in(key, i), (2, k * k, C))
          for i, (k, _) in enumerate(specs)]
    for stride in (1, 2):
        a = kernels.multi_depthwise(x, ks, specs, stride, "taps")
        b = kernels.multi_depthwise(x, ks, specs, stride, "lax")
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _tiny(mixed_op="scan", layers=3):
    return sn.DartsSupernet(channels=C, layers=layers, num_classes=5, mixed_op=mixed_op)


X = jax.random.normal(jax.random.key(0), (N, H, H, 3))


def _init(model, seed, arch=None):
    return jax.jit(lambda k: model.init(k, X, arch or sn.uniform_arch()))(
        sn.init_key(seed))


@pytest.fixture(scope="module")
def tiny():
    model = _tiny()
    return model, _init(model, 1)


def _random_arch(seed):
    k = jax.random.key(seed)
    return {n: jax.nn.softmax(jax.random.normal(jax.random.fold_in(k, j), (14, 8)), -1)
            for j, n in enumerate(("normal", "reduce"))}


@pytest.mark.parametrize("mixed_op", ["scan", "edges",
                                      pytest.param("fused", marks=pytest.mark.slow)])
def test_wiring_equals_loop_on_parameter_free_ops(mixed_op):
    """With weight only on parameter-free ops, all formulations are the same function.

    Stem, cell preprocessing and classifier share their parameters, so this checks the
    edge numbering, the node sums and the concatenation of the fused and scanned cells
    against the edge-by-edge reference.
    """
    rng = np.random.default_rng(0)
    e = cells.num_edges()
    normal = rng.random((e, len(PRIMITIVES))) * np.array([1, 1, 1, 1, 0, 0, 0, 0])
    reduce = rng.random((e, len(PRIMITIVES))) * np.array([1, 1, 1, 0, 0, 0, 0, 0])
    arch = {"normal": jnp.asarray(normal, jnp.float32),
            "reduce": jnp.asarray(reduce, jnp.float32)}
    # The reference only needs the parameter-free candidates (a cheaper compile).
    free = PRIMITIVES[:4]
    loop = sn.DartsSupernet(channels=C, layers=3, num_classes=5, mixed_op="loop",
                            primitives=free)
    free_arch = {k: v[:, :4] for k, v in arch.items()}
    lv = _init(loop, 1, free_arch)
    ref, _ = jax.jit(lambda v, a: loop.apply(v, X, a, mutable=["batch_stats"]))(
        lv, free_arch)
    other = _tiny(mixed_op)
    ov = _init(other, 2, arch)
    params = dict(ov["params"])
    for name, sub in lv["params"].items():
        if name.startswith("cell_"):
            cell = dict(params[name])  # keep the fused ops' own (unused) parameters
            cell["preprocess0"] = sub["preprocess0"]
            cell["preprocess1"] = sub["preprocess1"]
            params[name] = cell
        else:
            params[name] = sub
    out, _ = jax.jit(lambda v, a: other.apply(v, X, a, mutable=["batch_stats"]))(
        {"params": params, "batch_stats": ov["batch_stats"]}, arch)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_no_retrace_across_architectures_and_vmap_over_paths(tiny):
    model, variables = tiny

    @jax.jit
    @chex.assert_max_traces(n=1)
    def logits(arch):
        return model.apply(variables, X, arch, train=False)

    archs = [_random_arch(10 + i) for i in range(3)]
    outs = [logits(a) for a in archs]
    for out in outs:
        assert out.shape == (N, 5) and bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(outs[0], outs[1])  # the architecture input matters
    batched = jax.tree.map(lambda *a: jnp.stack(a), *archs)
    many = jax.jit(jax.vmap(lambda a: model.apply(variables, X, a, train=False)))(batched)
    for i in range(3):
        np.testing.assert_allclose(many[i], outs[i], rtol=1e-5, atol=1e-5)


def test_gradient_reaches_every_parameter_and_the_architecture(tiny):
    model, variables = tiny
    labels = jnp.array([1, 3])
    alphas = {k: 1e-3 * jax.random.normal(jax.random.key(5 + i), (14, 8))
              for i, k in enumerate(("normal", "reduce"))}

    @jax.jit
    def grads(params, alphas):
        def loss(params, alphas):
            arch = jax.tree.map(lambda a: jax.nn.softmax(a, -1), alphas)
            logits, _ = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, X, arch,
                mutable=["batch_stats"])
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(N), labels])

        return jax.grad(loss, argnums=(0, 1))(params, alphas)

    gp, ga = grads(variables["params"], alphas)
    _, mask = sn._intermediate_rows(4)
    dead, leaked = [], []
    for path, g in jax.tree_util.tree_flatten_with_path(gp)[0]:
        name = jax.tree_util.keystr(path)
        if "from_nodes" in name:  # scanned slots: (t, slot, ...); unused slots get 0
            used = np.abs(np.asarray(g)).reshape(3, 3, -1).max(-1)
            if not np.all(used[mask > 0] > 0):
                dead.append(name)
            if np.any(used[mask == 0] != 0):
                leaked.append(name)
        elif not float(jnp.abs(g).max()) > 0:
            dead.append(name)
    assert not dead, dead
    assert not leaked, leaked
    for name in ("normal", "reduce"):
        assert ga[name].shape == (14, 8)
        # every op column of every edge moves (the `none` column too, via the softmax)
        assert bool(jnp.all(jnp.abs(ga[name]) > 0))


def test_train_mode_updates_running_stats_and_eval_mode_uses_them(tiny):
    model, variables = tiny
    arch = sn.uniform_arch()
    _, upd = jax.jit(lambda v: model.apply(v, X, arch, mutable=["batch_stats"]))(variables)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                           upd["batch_stats"])
    assert all(jax.tree.leaves(changed))
    forward = jax.jit(lambda v, x: model.apply(v, x, arch, train=False))
    trained = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
    both = forward(trained, X)
    first = forward(trained, jnp.concatenate([X[:1], X[:1]]))
    np.testing.assert_allclose(both[0], first[0], rtol=1e-5, atol=1e-6)  # per example


def test_bad_mixed_op_and_primitives_rejected():
    with pytest.raises(ValueError, match="mixed_op='vmap'"):
        sn.DartsSupernet(mixed_op="vmap").init(jax.random.key(0), X, sn.uniform_arch())
    with pytest.raises(ValueError, match="use mixed_op='loop'"):
        sn.DartsSupernet(primitives=("none", "skip_connect")).init(
            jax.random.key(0), X, sn.uniform_arch(primitives=("none", "skip_connect")))


def _depthwise_cases(x64):
    """(name, f(x, kernels) under "slices", the same under "taps") for every depthwise kernel."""
    dt = jnp.float64 if x64 else jnp.float32
    key = jax.random.key(7)
    x = jax.random.normal(key, (N, 9, 9, C), dt)  # odd size: strided windows at the border
    specs = [(3, 1), (5, 1), (3, 2), (5, 2)]
    ks = tuple(jax.random.normal(jax.random.fold_in(key, i), (2, k * k, C), dt)
               for i, (k, _) in enumerate(specs))
    cases = []
    for stride in (1, 2):
        cases.append((f"multi_s{stride}", x, ks,
                      lambda x, ks, impl, s=stride: kernels.multi_depthwise(x, ks, specs, s, impl)))
    xs = jax.random.normal(jax.random.fold_in(key, 9), (2, N, 9, 9, C), dt)
    for k, d in [(3, 1), (5, 1), (3, 2)]:
        kk = ks[specs.index((k, d))]
        cases.append((f"stacked_k{k}_d{d}", xs, kk,
                      lambda x, kk, impl, k=k, d=d: kernels.stacked_depthwise(x, kk, k, d, impl)))
    for stride in (1, 2):  # the generic kernel, also strided
        cases.append((f"depthwise_s{stride}", xs, ks[1],
                      lambda x, kk, impl, s=stride: kernels.depthwise_slices(x, kk, 5, 1, s)
                      if impl == "slices" else _lax_stacked(x, kk, 5, 1, s)))
    return cases


def _lax_stacked(x, kk, k, d, stride):
    """Per-slice grouped convolution (an independent reference for the strided kernel)."""
    outs = []
    for i in range(x.shape[0]):
        outs.append(kernels.multi_depthwise(x[i], (kk[i:i + 1],), [(k, d)], stride, "lax")[0, 0])
    return jnp.stack(outs)


DEPTHWISE_CASES = 7  # len(_depthwise_cases(...)), checked in the test


@pytest.mark.parametrize("case", range(DEPTHWISE_CASES))
def test_slices_kernels_value_and_gradient_equal_autodiff_of_reference(case):
    """The hand-written VJP of the "slices" kernels equals autodiff of another formulation
    (float64, so the tolerance is tight), in value, gradient, and second order: a
    Hessian-vector product (jvp of grad, as `darts_exact` does) and grad of grad."""
    with jax.enable_x64(True):
        cases = _depthwise_cases(True)
        assert len(cases) == DEPTHWISE_CASES
        name, x, ks, f = cases[case]
        ref_impl = "lax" if name.startswith("depthwise") else "taps"
        ct = jax.random.normal(jax.random.key(3), jax.eval_shape(
            lambda: f(x, ks, ref_impl)).shape, jnp.float64)

        def loss(impl):
            return lambda x, ks: jnp.sum(jnp.tanh(f(x, ks, impl)) * ct)

        a, b = loss("slices"), loss(ref_impl)
        np.testing.assert_allclose(a(x, ks), b(x, ks), rtol=1e-10)
        ga, gb = jax.grad(a, (0, 1))(x, ks), jax.grad(b, (0, 1))(x, ks)
        for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
            np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-11)
        tx = jax.random.normal(jax.random.key(4), x.shape, jnp.float64)
        tk = jax.tree.map(lambda k: jnp.cos(k), ks)
        hva = jax.jvp(jax.grad(a, (0, 1)), (x, ks), (tx, tk))[1]
        hvb = jax.jvp(jax.grad(b, (0, 1)), (x, ks), (tx, tk))[1]
        for u, v in zip(jax.tree.leaves(hva), jax.tree.leaves(hvb)):
            np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-10)
        # grad of grad both ways round: d/dks of a function of dL/dx, and d/dx of a
        # function of dL/dks (reverse over the weight gradient, as `mixed_vjp` does)
        for outer, inner in ((1, 0), (0, 1)):
            def gg(f):
                return jax.grad(lambda x, ks: sum(jnp.sum(jnp.sin(g)) for g in jax.tree.leaves(
                    jax.grad(f, inner)(x, ks))), outer)(x, ks)
            for u, v in zip(jax.tree.leaves(gg(a)), jax.tree.leaves(gg(b))):
                np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_slices_equals_reduce_window_up_to_second_order(stride):
    """The slice-max pool's hand-written VJP routes the gradient like XLA's
    select-and-scatter (first maximum in window order), also with ties, and stays
    differentiable (jvp of grad)."""
    from jaxnas.spaces import ops as ops_lib
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (2, 2, 7, 7, 3), jnp.float64)
        x = x.at[0, 0, 2:5, 2:5, 0].set(1.5)  # a plateau: ties inside windows
        ct = jax.random.normal(jax.random.key(1), (2, 2) + (7 // stride + (7 % stride > 0),) * 2
                               + (3,), jnp.float64)
        ref = jax.vmap(jax.vmap(lambda v: ops_lib.max_pool_3x3_reduce_window(
            v[None], stride)[0]))

        def loss(f):
            return lambda x: jnp.sum(jnp.tanh(f(x)) * ct)

        a, b = loss(lambda v: kernels.max_pool_3x3(v, stride)), loss(ref)
        np.testing.assert_allclose(a(x), b(x), rtol=1e-12)
        np.testing.assert_allclose(jax.grad(a)(x), jax.grad(b)(x), rtol=1e-10, atol=1e-12)
        t = jnp.cos(x)
        np.testing.assert_allclose(jax.jvp(jax.grad(a), (x,), (t,))[1],
                                   jax.jvp(jax.grad(b), (x,), (t,))[1], rtol=1e-9, atol=1e-11)
        # grad of grad, away from ties (at a tie JAX's own jvp and vjp rules of
        # reduce_window max pick differently tied elements, so no convention is "right")
        xt = jax.random.normal(jax.random.key(2), x.shape, jnp.float64)
        gg = [jax.grad(lambda x, f=f: jnp.sum(jnp.sin(jax.grad(f)(x)) * t))(xt) for f in (a, b)]
        np.testing.assert_allclose(gg[0], gg[1], rtol=1e-9, atol=1e-11)


def _numpy_stem_conv(x, w):
    """3x3 'SAME' convolution (NHWC, HWIO) in numpy: the stem conv, independently."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, wd = x.shape[1:3]
    return sum(np.einsum("nhwc,cd->nhwd", xp[:, i:i + h, j:j + wd], w[i, j])
               for i in range(3) for j in range(3))


def test_running_variance_is_the_unbiased_batch_variance():
    """PyTorch DARTS: running_var <- 0.9 * running_var + 0.1 * unbiased batch variance,
    in the stacked (non-affine) BatchNorm and in the stem's affine BatchNorm."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4, 5)).astype(np.float32) * 2 + 1
    bn = sn.StackedBatchNorm()
    v = bn.init(jax.random.key(0), x, True)
    _, upd = bn.apply(v, x, True, mutable=["batch_stats"])
    want = 0.9 + 0.1 * np.var(x, axis=(1, 2, 3), ddof=1)
    np.testing.assert_allclose(upd["batch_stats"]["var"], want, rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * x.mean(axis=(1, 2, 3)),
                               rtol=1e-5, atol=1e-6)

    model = _tiny(layers=1)
    variables = _init(model, 3)
    _, upd = jax.jit(lambda v: model.apply(v, X, sn.uniform_arch(),
                                           mutable=["batch_stats"]))(variables)
    s = _numpy_stem_conv(np.asarray(X, np.float64),
                         np.asarray(variables["params"]["stem_kernel"], np.float64))
    stem = upd["batch_stats"]["stem_bn"]
    np.testing.assert_allclose(stem["var"], 0.9 + 0.1 * np.var(s, axis=(0, 1, 2), ddof=1),
                               rtol=1e-5)
    np.testing.assert_allclose(stem["mean"], 0.1 * s.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-6)
    # the parameter and statistics names are flax.linen.BatchNorm's (weights load by name)
    assert set(variables["params"]["stem_bn"]) == {"scale", "bias"}
    assert set(stem) == {"mean", "var"}


def test_stem_batch_norm_eval_mode_uses_running_statistics():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 4, 6)).astype(np.float32)
    bn = sn.StemBatchNorm()
    v = bn.init(jax.random.key(0), x, True)
    params = {"scale": jnp.asarray(rng.random(6) + 0.5, jnp.float32),
              "bias": jnp.asarray(rng.standard_normal(6), jnp.float32)}
    stats = {"mean": jnp.asarray(rng.standard_normal(6), jnp.float32),
             "var": jnp.asarray(rng.random(6) + 0.5, jnp.float32)}
    assert jax.tree.map(jnp.shape, v["params"]) == jax.tree.map(jnp.shape, params)
    y = bn.apply({"params": params, "batch_stats": stats}, x, False)
    want = ((x - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + 1e-5)
            * np.asarray(params["scale"]) + np.asarray(params["bias"]))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    y = bn.apply({"params": params, "batch_stats": stats}, x, True, mutable=["batch_stats"])[0]
    want = ((x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-5)
            * np.asarray(params["scale"]) + np.asarray(params["bias"]))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_lax_impl_initialises_and_runs_in_float64():
    """impl="lax" casts its kernels like the other impls: float64 images work, and
    give the "slices" function to float64 rounding."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(2).standard_normal((N, H, H, 3)))
        arch = jax.tree.map(lambda a: a.astype(jnp.float64), _random_arch(4))
        lax_model = sn.DartsSupernet(channels=2, layers=2, steps=2, multiplier=2,
                                     num_classes=3, impl="lax")
        arch2 = {k: a[:cells.num_edges(2)] for k, a in arch.items()}
        v = jax.jit(lambda k: lax_model.init(k, x, arch2))(sn.init_key(0))
        out, _ = jax.jit(lambda v: lax_model.apply(v, x, arch2, mutable=["batch_stats"]))(v)
        ref_model = lax_model.clone(impl="slices")
        ref, _ = jax.jit(lambda v: ref_model.apply(v, x, arch2, mutable=["batch_stats"]))(v)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-10)


def test_remat_cells_give_the_same_function_and_gradients():
    """remat=True (jax.checkpoint per cell) keeps the parameter tree and computes the
    same logits, batch statistics and gradients (rematerialisation recomputes the same
    ops; float32 rounding at most)."""
    kw = dict(channels=2, layers=1, steps=2, multiplier=2, num_classes=3)
    plain, remat = sn.DartsSupernet(**kw), sn.DartsSupernet(**kw, remat=True)
    arch = {k: a[:cells.num_edges(2)] for k, a in _random_arch(7).items()}
    v = jax.jit(lambda k: plain.init(k, X, arch))(sn.init_key(0))
    vr = jax.jit(lambda k: remat.init(k, X, arch))(sn.init_key(0))
    assert jax.tree.structure(v) == jax.tree.structure(vr)
    chex.assert_trees_all_equal(v, vr)

    def grads(model):
        def loss(params, arch):
            logits, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]},
                                      X, arch, mutable=["batch_stats"])
            return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), upd
        return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(v["params"], arch)

    (gp, ga), upd = grads(plain)
    (gpr, gar), updr = grads(remat)
    chex.assert_trees_all_close((gp, ga, upd), (gpr, gar, updr), rtol=1e-5, atol=1e-6)
