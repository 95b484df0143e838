"""Tests for jaxnas.hypergrad against closed forms and autodiff through the unroll."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxnas import hypergrad as hg

N_W, N_A = 5, 3  # params / arch sizes of the quadratic problem


# ------------------------------------------------------------- quadratic bilevel
#
# train(w, a) = 0.5 w^T A w - w^T B a + 0.5 a^T C a      (A symmetric PD)
# val(w, a)   = 0.5 ||w - t||^2 + 0.5 a^T D a
#
# grad_w train = A w - B a,   H = A,   d2_{a,w} train . v = -B^T v,
# grad_w val = w - t,         grad_a val = D a,   w*(a) = A^-1 B a.


def _quadratic_problem(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(N_W, N_W)))
    eig = np.linspace(0.5, 2.0, N_W)
    c = rng.normal(size=(N_A, N_A))
    d = rng.normal(size=(N_A, N_A))
    return {
        "A": q @ np.diag(eig) @ q.T,
        "B": rng.normal(size=(N_W, N_A)),
        "C": c @ c.T,
        "D": d @ d.T + np.eye(N_A),
        "t": rng.normal(size=N_W),
        "w": rng.normal(size=N_W),
        "a": rng.normal(size=N_A),
        "buf": rng.normal(size=N_W),
    }


# Two layouts of the same vectors: flat arrays, and nested dict/tuple pytrees.
# Leaf order (dict keys sorted) matches the flat order, so ravel_pytree inverts it.
def _flat_to_tree(x: np.ndarray):
    if len(x) == N_W:
        return {"layer": {"k0": x[:2].reshape(2, 1), "k1": x[2:3]},
                "rest": (x[3:], {"empty": x[3:3]})}
    return (x[:1], {"alpha": x[1:].reshape(1, 2)})


LAYOUTS = {"flat": (lambda x: x), "tree": _flat_to_tree}


def _ravel(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def _losses(p: dict, layout: str, dtype):
    A, B, C, D, t = (jnp.asarray(p[k], dtype) for k in "ABCDt")

    def train(w, a, batch):
        del batch
        w, a = ravel_pytree(w)[0], ravel_pytree(a)[0]
        return 0.5 * w @ A @ w - w @ B @ a + 0.5 * a @ C @ a

    def val(w, a, batch):
        del batch
        w, a = ravel_pytree(w)[0], ravel_pytree(a)[0]
        return 0.5 * jnp.sum((w - t) ** 2) + 0.5 * a @ D @ a

    to_tree = LAYOUTS[layout]
    w = jax.tree.map(lambda x: jnp.asarray(x, dtype), to_tree(p["w"]))
    a = jax.tree.map(lambda x: jnp.asarray(x, dtype), to_tree(p["a"]))
    buf = jax.tree.map(lambda x: jnp.asarray(x, dtype), to_tree(p["buf"]))
    return train, val, w, a, buf


def test_tree_helpers():
    x = {"a": np.array([1.0, 2.0]), "b": (np.array([[3.0]]), np.zeros(0))}
    y = {"a": np.array([-1.0, 0.5]), "b": (np.array([[2.0]]), np.zeros(0))}
    x, y = (jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), t) for t in (x, y))
    assert float(hg.tree_vdot(x, y)) == 6.0
    assert float(hg.tree_norm(x)) == pytest.approx(np.sqrt(14.0))
    out = hg.tree_axpy(2.0, x, y)
    np.testing.assert_array_equal(_ravel(out), [1.0, 4.5, 8.0])
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(out))
    np.testing.assert_array_equal(_ravel(hg.tree_scale(-1.0, x)), [-1.0, -2.0, -3.0])


def _w_star(p):
    return np.linalg.solve(p["A"], p["B"] @ p["a"])


def _check_tree(out, like, expected: np.ndarray, **tol):
    assert jax.tree.structure(out) == jax.tree.structure(like)
    for o, l in zip(jax.tree.leaves(out), jax.tree.leaves(like)):
        assert o.shape == l.shape and o.dtype == l.dtype
    np.testing.assert_allclose(_ravel(out), expected, **tol)


def test_quadratic_closed_forms():
    """Every estimator against its closed form, params and arch nested pytrees."""
    p = _quadratic_problem()
    A, B, D, t, w, a = (p[k] for k in "ABDtwa")
    lr = 0.1
    with jax.enable_x64(True):
        train, val, wt, at, buf = _losses(p, "tree", jnp.float64)
        args = (train, val, wt, at, None, None)
        tol = dict(rtol=1e-10, atol=1e-10)

        _check_tree(hg.first_order(*args), at, D @ a, **tol)

        w1 = w - lr * (A @ w - B @ a)
        expected = D @ a + lr * B.T @ (w1 - t)
        for method in ("exact", "finite_difference"):
            out = hg.darts_second_order(*args, lr=lr, method=method, eps=1e-3)
            # Quadratic train loss: the central difference is exact up to roundoff.
            _check_tree(out, at, expected, rtol=1e-7, atol=1e-7)

        m, wd = 0.9, 3e-4
        w1 = w - lr * (m * p["buf"] + A @ w - B @ a + wd * w)
        out = hg.darts_second_order(*args, lr=lr, momentum=m, momentum_buffer=buf,
                                    weight_decay=wd)
        _check_tree(out, at, D @ a + lr * B.T @ (w1 - t), **tol)

        _check_tree(hg.amended(*args, lr=lr), at, D @ a + lr * B.T @ A @ (w - t),
                    **tol)

        # Implicit at an arbitrary w, with damping, against the formula.
        damp = 0.3
        x = np.linalg.solve(A + damp * np.eye(N_W), w - t)
        out = hg.implicit(*args, method="cg", iters=N_W, damping=damp)
        _check_tree(out, at, D @ a + B.T @ x, **tol)

        # Truncated Neumann series, term by term: alpha sum_{j<=K} (I - alpha M)^j v.
        alpha, k = 0.2, 3
        step = np.eye(N_W) - alpha * (A + damp * np.eye(N_W))
        x = alpha * sum(np.linalg.matrix_power(step, j) @ (w - t) for j in range(k + 1))
        out = hg.implicit(*args, method="neumann", iters=k, damping=damp, alpha=alpha)
        _check_tree(out, at, D @ a + B.T @ x, **tol)


def test_implicit_matches_true_hypergradient():
    """At w = w*(a), CG and Neumann give d/da val(w*(a), a) (flat-array layout)."""
    p = _quadratic_problem(1)
    A, B, D, t, a = (p[k] for k in "ABDta")
    w_star = _w_star(p)

    def total_val(a_):
        w_ = np.linalg.solve(A, B @ a_)
        return 0.5 * np.sum((w_ - t) ** 2) + 0.5 * a_ @ D @ a_

    h = 1e-5
    numeric = np.array([(total_val(a + h * e) - total_val(a - h * e)) / (2 * h)
                        for e in np.eye(N_A)])
    analytic = D @ a + B.T @ np.linalg.solve(A, w_star - t)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)

    p = dict(p, w=w_star)
    for dtype, tol in ((jnp.float32, 1e-5), (jnp.float64, 1e-10)):
        with jax.enable_x64(dtype == jnp.float64):
            train, val, w, at, _ = _losses(p, "flat", dtype)
            args = (train, val, w, at, None, None)
            cg = hg.implicit(*args, method="cg", iters=2 * N_W)
            _check_tree(cg, at, analytic, rtol=tol, atol=tol)
            # Eigenvalues in [0.5, 2], alpha = 0.5: contraction factor <= 0.75.
            neumann = hg.implicit(*args, method="neumann", iters=100, alpha=0.5)
            _check_tree(neumann, at, analytic, rtol=10 * tol, atol=10 * tol)
            few = hg.implicit(*args, method="neumann", iters=3, alpha=0.5)
            assert np.abs(_ravel(few) - analytic).max() > 1e-3  # truncation is real


# --------------------------------------------------------- non-quadratic problem
#
# A tiny MLP whose hidden layer is a softmax-weighted mixed op; arch = mixing logits.
# (Kept small: XLA compile time dominates the test time.)


def _mlp_problem(dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d_in, d_h = 5, 3, 4
    params = {"stem": rng.normal(size=(d_in, d_h)),
              "ops": (rng.normal(size=(d_h, d_h)) * 0.7,),
              "head": rng.normal(size=d_h)}
    arch = {"edge": (rng.normal(size=2),)}
    train_batch = (rng.normal(size=(n, d_in)), np.sin(np.arange(n)))
    val_batch = (rng.normal(size=(n, d_in)), np.cos(np.arange(n)))
    cast = partial(jax.tree.map, lambda x: jnp.asarray(x, dtype))
    return cast(params), cast(arch), cast(train_batch), cast(val_batch)


def mlp_loss(params, arch, batch):
    x, y = batch
    h = jnp.tanh(x @ params["stem"])
    mix = jax.nn.softmax(arch["edge"][0])
    h = mix[0] * jnp.tanh(h @ params["ops"][0]) + mix[1] * h
    return jnp.mean((h @ params["head"] - y) ** 2)


def _sub(a, b):
    return jax.tree.map(jnp.subtract, a, b)


def _max_abs(x) -> float:
    return max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(x))


def _unrolled_autodiff(params, arch, tb, vb, lr, momentum=0.0, buf=None, wd=0.0):
    """d/da val(w'(a), a) by differentiating through the virtual step."""
    def through(a):
        g = jax.grad(mlp_loss)(params, a, tb)
        m = buf if buf is not None else jax.tree.map(jnp.zeros_like, params)
        w1 = jax.tree.map(lambda w, gi, mi: w - lr * (momentum * mi + gi + wd * w),
                          params, g, m)
        return mlp_loss(w1, a, vb)

    return jax.grad(through)(arch)


def _assert_tree_close(x, y, **tol):
    assert jax.tree.structure(x) == jax.tree.structure(y)
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol)


def test_darts_exact_equals_autodiff_through_unroll():
    with jax.enable_x64(True):
        params, arch, tb, vb = _mlp_problem(jnp.float64)
        lr = 0.3
        out = hg.darts_second_order(mlp_loss, mlp_loss, params, arch, tb, vb, lr=lr)
        ref = _unrolled_autodiff(params, arch, tb, vb, lr)
        _assert_tree_close(out, ref, rtol=1e-12, atol=1e-14)
        # The correction is not negligible: differs from the first-order gradient.
        first = hg.first_order(mlp_loss, mlp_loss, params, arch, tb, vb)
        w1 = jax.tree.map(lambda w, g: w - lr * g, params,
                          jax.grad(mlp_loss)(params, arch, tb))
        at_w1 = hg.first_order(mlp_loss, mlp_loss, w1, arch, tb, vb)
        assert _max_abs(_sub(out, at_w1)) > 1e-4
        assert _max_abs(_sub(out, first)) > 1e-4


def test_momentum_weight_decay_virtual_step():
    with jax.enable_x64(True):
        params, arch, tb, vb = _mlp_problem(jnp.float64)
        lr, m, wd = 0.3, 0.9, 0.05
        buf = jax.tree.map(lambda w: jnp.cos(w * 3.0), params)
        args = (mlp_loss, mlp_loss, params, arch, tb, vb)
        ref = _unrolled_autodiff(params, arch, tb, vb, lr, m, buf, wd)
        out = hg.darts_second_order(*args, lr=lr, momentum=m, momentum_buffer=buf,
                                    weight_decay=wd)
        _assert_tree_close(out, ref, rtol=1e-12, atol=1e-14)
        fd = hg.darts_second_order(*args, lr=lr, method="finite_difference",
                                   eps=1e-4, momentum=m, momentum_buffer=buf,
                                   weight_decay=wd)
        _assert_tree_close(fd, ref, rtol=1e-6, atol=1e-8)
        plain = hg.darts_second_order(*args, lr=lr)
        assert _max_abs(_sub(out, plain)) > 1e-4


@pytest.mark.parametrize("method", ["exact", "finite_difference"])
def test_plain_sgd_defaults_are_bitwise_identical(method):
    params, arch, tb, vb = _mlp_problem(jnp.float32)
    args = (mlp_loss, mlp_loss, params, arch, tb, vb)
    buf = jax.tree.map(jnp.ones_like, params)
    base = hg.darts_second_order(*args, lr=0.1, method=method)
    for extra in (dict(momentum=0.0, momentum_buffer=None, weight_decay=0.0),
                  dict(momentum=0.0, momentum_buffer=buf, weight_decay=0.0),
                  dict(momentum=0.9, momentum_buffer=None, weight_decay=0)):
        out = hg.darts_second_order(*args, lr=0.1, method=method, **extra)
        for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(base)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_finite_difference_converges_to_exact():
    lr = 0.3
    with jax.enable_x64(True):
        params, arch, tb, vb = _mlp_problem(jnp.float64)
        args = (mlp_loss, mlp_loss, params, arch, tb, vb)
        exact = hg.darts_second_order(*args, lr=lr, method="exact")
        errs = [_max_abs(_sub(hg.darts_second_order(
            *args, lr=lr, method="finite_difference", eps=eps), exact))
            for eps in (1e-1, 1e-2, 1e-3)]
        assert errs[0] > errs[1] > errs[2]
        assert errs[2] < errs[1] / 20  # O(eps^2): ~100x per decade
        assert errs[2] < 1e-7
        # The mixed product itself.
        v = jax.grad(mlp_loss)(params, arch, vb)
        fd = hg.finite_difference_mixed(mlp_loss, params, arch, tb, v, eps=1e-4)
        exact_mixed = hg.mixed_vjp(mlp_loss, params, arch, tb, v)
        _assert_tree_close(fd, exact_mixed, rtol=1e-7, atol=1e-9)
    params, arch, tb, vb = _mlp_problem(jnp.float32)
    args = (mlp_loss, mlp_loss, params, arch, tb, vb)
    exact = hg.darts_second_order(*args, lr=lr, method="exact")
    fd = hg.darts_second_order(*args, lr=lr, method="finite_difference", eps=0.01)
    first = hg.first_order(*args)
    scale = _max_abs(_sub(exact, first))
    assert _max_abs(_sub(fd, exact)) < 0.05 * scale


def test_mixed_vjp_against_explicit_jacobian():
    with jax.enable_x64(True):
        params, arch, tb, _ = _mlp_problem(jnp.float64)
        w_flat, unravel_w = ravel_pytree(params)
        a_flat, unravel_a = ravel_pytree(arch)
        # J[i, j] = d/da_j d/dw_i L, so d2_{a,w} L . v = J^T v.
        jac = jax.jacfwd(lambda a: ravel_pytree(jax.grad(mlp_loss)(
            params, unravel_a(a), tb))[0])(a_flat)
        v = jnp.sin(jnp.arange(w_flat.size, dtype=jnp.float64))
        for mode in hg.MIXED_MODES:
            out = hg.mixed_vjp(mlp_loss, params, arch, tb, unravel_w(v), mode=mode)
            np.testing.assert_allclose(_ravel(out), np.asarray(jac.T @ v), rtol=1e-12,
                                       atol=1e-14)


def test_mixed_vjp_rejects_unknown_mode():
    params, arch, tb, _ = _mlp_problem(jnp.float32)
    with pytest.raises(ValueError, match="mode='both'.*forward_over_reverse"):
        hg.mixed_vjp(mlp_loss, params, arch, tb, params, mode="both")


def test_zero_vector_finite_difference_is_finite():
    params, arch, tb, vb = _mlp_problem(jnp.float32)
    zero = jax.tree.map(jnp.zeros_like, params)
    out = hg.finite_difference_mixed(mlp_loss, params, arch, tb, zero)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(out))

    def val_arch_only(w, a, batch):  # grad_w val == 0 exactly
        return 0.5 * jnp.sum(a["edge"][0] ** 2)

    g = jax.jit(partial(hg.darts_second_order, mlp_loss, val_arch_only, lr=0.1,
                        method="finite_difference"))(params, arch, tb, vb)
    ref = jax.grad(val_arch_only, argnums=1)(params, arch, vb)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))
    _assert_tree_close(g, ref, rtol=1e-6, atol=0)


def test_hvp_against_explicit_hessian():
    rng = np.random.default_rng(3)
    params = {"u": jnp.asarray(rng.normal(size=3), jnp.float32),
              "m": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}
    v = {"u": jnp.array([1.0, -2.0, 0.5]),
         "m": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}

    def loss(p):
        return jnp.sum(jnp.sin(p["m"] @ p["u"][:2]) * p["u"][2]) + jnp.sum(p["m"] ** 3)

    flat, unravel = ravel_pytree(params)
    hess = jax.jit(jax.hessian(lambda x: loss(unravel(x))))(flat)
    out = hg.hvp(loss, params, v)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    np.testing.assert_allclose(_ravel(out), np.asarray(hess @ ravel_pytree(v)[0]),
                               rtol=1e-5, atol=1e-5)


LR = object()  # placeholder for the learning rate in ESTIMATORS
ESTIMATORS = {
    "first_order": (hg.first_order, {}),
    "darts_exact": (hg.darts_second_order, {"lr": LR}),
    "darts_fd": (hg.darts_second_order, {"lr": LR, "method": "finite_difference"}),
    "amended": (hg.amended, {"lr": LR}),
    "implicit_cg": (hg.implicit, {"method": "cg", "iters": 4, "damping": 1.0}),
    "implicit_neumann": (hg.implicit, {"method": "neumann", "iters": 4,
                                       "alpha": 0.05}),
}


def _all_estimators(params, arch, tb, vb, lr):
    return {name: fn(mlp_loss, mlp_loss, params, arch, tb, vb,
                     **{k: lr if v is LR else v for k, v in kw.items()})
            for name, (fn, kw) in ESTIMATORS.items()}


def test_jit_matches_eager():
    """All estimators under one jax.jit (lr traced, as the strategy passes a schedule
    value) against eager evaluation with a Python float lr."""
    params, arch, tb, vb = _mlp_problem(jnp.float32)
    eager = _all_estimators(params, arch, tb, vb, 0.1)
    jitted = jax.jit(_all_estimators)(params, arch, tb, vb, jnp.float32(0.1))
    for name in ESTIMATORS:
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(jitted[name]))
        _assert_tree_close(jitted[name], eager[name], rtol=1e-4, atol=1e-6)


def test_dtype_is_kept():
    """float32 in -> float32 out, even with a float64 lr and damping under x64.

    (float64 -> float64 for every estimator is checked by _check_tree above.)
    """
    with jax.enable_x64(True):
        train, val, w, a, buf = _losses(_quadratic_problem(), "tree", jnp.float32)

        @jax.jit
        def run(w, a, buf, c):
            args = (train, val, w, a, None, None)
            return [hg.first_order(*args), hg.amended(*args, lr=c),
                    hg.implicit(*args, method="cg", iters=2, damping=c),
                    hg.implicit(*args, method="neumann", iters=2, damping=c, alpha=c)
                    ] + [hg.darts_second_order(*args, lr=c, method=m, momentum=c,
                                               momentum_buffer=buf, weight_decay=c)
                         for m in ("exact", "finite_difference")]

        for out in run(w, a, buf, jnp.asarray(0.1, jnp.float64)):
            assert jax.tree.structure(out) == jax.tree.structure(a)
            assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(out))


def test_bad_method_raises():
    params, arch, tb, vb = _mlp_problem(jnp.float32)
    args = (mlp_loss, mlp_loss, params, arch, tb, vb)
    with pytest.raises(ValueError):
        hg.darts_second_order(*args, lr=0.1, method="bogus")
    with pytest.raises(ValueError):
        hg.implicit(*args, method="bogus", iters=3)
