"""Tests for jaxnas.study against closed forms of a quadratic bilevel problem
(float64), hand computations, and one small MLP checked against hypergrad and finite
differences."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxnas import hypergrad as hg
from jaxnas import study
from jaxnas.strategies import estimators

N_W, N_A = 5, 3

# Jitted once per loss (static), so each test compiles one program instead of
# dispatching op by op; it also checks that the study functions trace under jit.
UNROLLED = jax.jit(study.unrolled, static_argnums=(0, 1),
                   static_argnames=("steps", "per_step_batches", "method"))
IMPLICIT_REFERENCE = jax.jit(study.implicit_reference, static_argnums=(0, 1),
                             static_argnames=("tol", "max_iters", "solver",
                                              "return_info"))
ARCH_EIGENVALUES = jax.jit(study.arch_hessian_eigenvalues, static_argnums=(0,),
                           static_argnames=("chunk_size",))
WEIGHT_EXTREMES = jax.jit(study.weight_hessian_extremes, static_argnums=(0,),
                          static_argnames=("iters", "method"))
AGREEMENT = jax.jit(study.agreement)
ARGMAX_AGREEMENT = jax.jit(study.argmax_agreement, static_argnames=("axis",))
DIRECT = jax.jit(study.direct_gradient, static_argnums=(0,),
                 static_argnames=("train_loss", "steps"))
DARTS_EXACT = jax.jit(hg.darts_second_order, static_argnums=(0, 1),
                      static_argnames=("method",))
IMPLICIT = jax.jit(hg.implicit, static_argnums=(0, 1),
                   static_argnames=("method", "iters"))
IMPLICIT_TRACE = jax.jit(study.implicit_trace, static_argnums=(0, 1),
                         static_argnames=("method", "iters", "with_estimates"))


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------- quadratic bilevel
#
# train(w, a, b) = 0.5 w^T A w - w^T B a - w^T b + 0.5 a^T C a
# val(w, a)      = 0.5 ||w - t||^2 + 0.5 a^T D a + w^T E a
#
# grad_w train = A w - B a - b,  H = A,  d2_{a,w} train . x = -B^T x,
# grad_w val = w - t + E a,  grad_a val = D a + E^T w,  d2_a val = D.
# SGD: w_{t+1} = (I - lr A) w_t + lr (B a + b_t),
# so dw_T/da = sum_{s<T} (I - lr A)^s lr B.


def _problem(eigs=(0.5, 0.8, 1.1, 1.6, 2.0), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(N_W, N_W)))
    d = rng.normal(size=(N_A, N_A))
    return {"A": q @ np.diag(eigs) @ q.T, "B": rng.normal(size=(N_W, N_A)),
            "D": d + d.T,  # symmetric, indefinite: the arch Hessian
            "E": rng.normal(size=(N_W, N_A)), "t": rng.normal(size=N_W),
            "w": rng.normal(size=N_W), "a": rng.normal(size=N_A),
            "b": rng.normal(size=(4, N_W)), "q": q}


def _w_tree(x):
    return {"k0": x[:2].reshape(2, 1), "k1": (x[2:],)}


def _a_tree(x):
    return {"alpha": x[:1], "beta": x[1:].reshape(1, 2)}


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


# The matrices travel in the batches, so that one jitted program serves every variant.
def _train(w, a, batch):
    w, a = ravel_pytree(w)[0], ravel_pytree(a)[0]
    return 0.5 * w @ batch["A"] @ w - w @ batch["B"] @ a - w @ batch["b"] + 0.5 * a @ a


def _val(w, a, batch):
    w, a = ravel_pytree(w)[0], ravel_pytree(a)[0]
    return (0.5 * jnp.sum((w - batch["t"]) ** 2) + 0.5 * a @ batch["D"] @ a
            + w @ batch["E"] @ a)


def _losses(p):
    p["tb"] = {"A": jnp.asarray(p["A"]), "B": jnp.asarray(p["B"]), "b": jnp.zeros(N_W)}
    p["vb"] = {k: jnp.asarray(p[k]) for k in "DEt"}
    return _train, _val, _w_tree(jnp.asarray(p["w"])), _a_tree(jnp.asarray(p["a"]))


@functools.lru_cache(maxsize=None)
def _setup(eigs=(0.5, 0.8, 1.1, 1.6, 2.0)):
    """(problem, train, val, w, a), cached so that jitted programs are reused."""
    p = _problem(eigs=eigs)
    return (p, *_losses(p))


def _unrolled_closed_form(p, lr, steps, batches=None):
    A, B, D, E, t, w, a = (p[k] for k in "ABDEtwa")
    step = np.eye(N_W) - lr * A
    jac = np.zeros((N_W, N_A))
    for s in range(steps):
        b = np.zeros(N_W) if batches is None else batches[s]
        w = step @ w + lr * (B @ a + b)
        jac = step @ jac + lr * B
    direct = D @ a + E.T @ w
    return direct + jac.T @ (w - t + E @ a), direct


TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", ["autodiff", "adjoint"])
@pytest.mark.parametrize("steps", [0, 1, 4])
def test_unrolled_closed_form(steps, method):
    p, train, val, w, a = _setup()
    lr = 0.3
    out = UNROLLED(train, val, w, a, p["tb"], p["vb"], lr=lr, steps=steps, method=method)
    assert jax.tree.structure(out) == jax.tree.structure(a)
    expected, direct = _unrolled_closed_form(p, lr, steps)
    np.testing.assert_allclose(_flat(out), expected, **TOL)
    # The split: g1 at w_T, g2 the rest, which is exactly zero without a step.
    g1 = DIRECT(val, w, a, p["vb"], train_loss=train, train_batch=p["tb"], lr=lr,
               steps=steps)
    g1, g2 = study.split(out, g1)
    np.testing.assert_allclose(_flat(g1), direct, **TOL)
    np.testing.assert_allclose(_flat(g1) + _flat(g2), expected, **TOL)
    if steps == 0:
        assert np.all(_flat(g2) == 0)
    if steps == 1:
        exact = DARTS_EXACT(train, val, w, a, p["tb"], p["vb"], lr=lr, method="exact")
        np.testing.assert_allclose(_flat(out), _flat(exact), **TOL)


@pytest.mark.parametrize("method", ["autodiff", "adjoint"])
def test_unrolled_per_step_batches(method):
    p, train, val, w, a = _setup()
    batches = {"A": jnp.asarray(np.stack([p["A"]] * 3)),
               "B": jnp.asarray(np.stack([p["B"]] * 3)), "b": jnp.asarray(p["b"][:3])}
    out = UNROLLED(train, val, w, a, batches, p["vb"], lr=0.2, steps=3,
                   per_step_batches=True, method=method)
    expected, _ = _unrolled_closed_form(p, 0.2, 3, batches=p["b"][:3])
    np.testing.assert_allclose(_flat(out), expected, **TOL)
    with pytest.raises(ValueError, match="steps"):
        UNROLLED(train, val, w, a, p["tb"], p["vb"], lr=0.2, steps=-1, method=method)
    with pytest.raises(ValueError, match="method='backprop'"):
        UNROLLED(train, val, w, a, p["tb"], p["vb"], lr=0.2, steps=1, method="backprop")


def _implicit_closed_form(p, x):
    return p["D"] @ p["a"] + p["E"].T @ p["w"] + p["B"].T @ x


def _v(p):
    return p["w"] - p["t"] + p["E"] @ p["a"]


@pytest.mark.parametrize("solver", ["auto", "cg", "normal", "gmres"])
def test_implicit_reference_positive_definite(solver):
    p, train, val, w, a = _setup()
    damp = 0.25
    out, info = IMPLICIT_REFERENCE(train, val, w, a, p["tb"], p["vb"], damping=damp,
                                         solver=solver, return_info=True)
    x = np.linalg.solve(p["A"] + damp * np.eye(N_W), _v(p))
    np.testing.assert_allclose(_flat(out), _implicit_closed_form(p, x), rtol=1e-8,
                               atol=1e-8)
    assert float(info["relative_residual"]) <= 1e-8
    assert not bool(info["fallback"])
    # hypergrad's own CG is exact after dim(w) iterations on this problem.
    cg = IMPLICIT(train, val, w, a, p["tb"], p["vb"], method="cg", iters=N_W,
                  damping=damp)
    np.testing.assert_allclose(_flat(out), _flat(cg), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("solver", ["auto", "normal", "gmres"])
def test_implicit_reference_indefinite(solver):
    p, train, val, w, a = _setup(eigs=(-3.0, -1.0, 0.5, 1.0, 2.0))
    out = IMPLICIT_REFERENCE(train, val, w, a, p["tb"], p["vb"], solver=solver)
    x = np.linalg.solve(p["A"], _v(p))
    np.testing.assert_allclose(_flat(out), _implicit_closed_form(p, x), rtol=1e-7,
                               atol=1e-7)


def test_implicit_reference_singular_falls_back_to_least_squares():
    """A singular H with v outside its range: no solution, CG cannot reach tol; "auto"
    falls back to the normal equations, whose answer is the pseudo-inverse's."""
    p, train, val, w, a = _setup(eigs=(0.0, 0.7, 1.0, 1.5, 2.0))
    out, info = IMPLICIT_REFERENCE(train, val, w, a, p["tb"], p["vb"],
                                         return_info=True)
    v = _v(p)
    x = np.linalg.pinv(p["A"], rcond=1e-12) @ v
    np.testing.assert_allclose(_flat(out), _implicit_closed_form(p, x), rtol=1e-6,
                               atol=1e-6)
    assert bool(info["fallback"])
    null = p["q"][:, 0]  # the eigenvector of eigenvalue 0: the unreachable residual
    np.testing.assert_allclose(float(info["relative_residual"]),
                               abs(null @ v) / np.linalg.norm(v), rtol=1e-6)
    with pytest.raises(ValueError, match="solver"):
        IMPLICIT_REFERENCE(train, val, w, a, p["tb"], p["vb"], solver="lu")


def test_arch_hessian_eigenvalues_closed_form():
    p, train, val, w, a = _setup()
    for chunk in (None, 2):
        eig = ARCH_EIGENVALUES(val, w, a, p["vb"], chunk_size=chunk)
        np.testing.assert_allclose(np.asarray(eig), np.linalg.eigvalsh(p["D"]), **TOL)
    assert np.all(np.diff(np.asarray(eig)) >= 0)
    hess = np.asarray(study.arch_hessian(val, w, a, p["vb"]))
    np.testing.assert_allclose(hess, p["D"],
                               **TOL)


@pytest.mark.parametrize("eigs", [(0.5, 0.8, 1.1, 1.6, 2.0),
                                  (-3.0, -1.0, 0.5, 1.0, 2.0),
                                  (-2.0, -1.5, -1.0, -0.6, 1.0)])
def test_weight_hessian_extremes(eigs):
    p, train, _, w, a = _setup(eigs=eigs)
    out = WEIGHT_EXTREMES(train, w, a, p["tb"], key=jax.random.key(1),
                                        iters=200)
    lo, hi = np.linalg.eigvalsh(p["A"])[[0, -1]]
    np.testing.assert_allclose([float(out["min"]), float(out["max"])], [lo, hi],
                               rtol=1e-9, atol=1e-9)
    assert float(out["max_residual"]) < 1e-6 and float(out["min_residual"]) < 1e-6
    damped = WEIGHT_EXTREMES(train, w, a, p["tb"], key=jax.random.key(1),
                                           iters=200, damping=0.25)
    np.testing.assert_allclose(float(damped["min"]), lo + 0.25, rtol=1e-9)


@pytest.mark.parametrize("iters", [N_W, 8])  # 8: past the dimension, a breakdown
def test_lanczos_extremes(iters):
    for eigs in [(0.5, 0.8, 1.1, 1.6, 2.0), (-3.0, -1.0, 0.5, 1.0, 2.0)]:
        p, train, _, w, a = _setup(eigs=eigs)
        out = WEIGHT_EXTREMES(train, w, a, p["tb"], key=jax.random.key(2), iters=iters,
                              method="lanczos", damping=0.25)
        np.testing.assert_allclose([float(out["min"]), float(out["max"])],
                                   [eigs[0] + 0.25, eigs[-1] + 0.25], rtol=1e-9)
    # Fewer steps than the dimension: Ritz values lie inside the spectrum.
    m = jnp.diag(jnp.arange(1.0, 21.0))
    few = study.lanczos_extremes(lambda x: m @ x, jnp.ones(20), iters=6)
    assert 1.0 <= float(few["min"]) and float(few["max"]) <= 20.0
    assert float(few["max"]) > 19.0  # the ends converge first
    assert np.all(np.diff(np.asarray(few["ritz"])) >= 0)
    with pytest.raises(ValueError, match="method"):
        study.weight_hessian_extremes(train, w, a, p["tb"], key=jax.random.key(2),
                                      method="arnoldi")


def test_power_iteration_dominant_and_residual():
    m = np.diag([1.0, -4.0, 2.0])
    lam, v, res = study.power_iteration(lambda x: jnp.asarray(m) @ x,
                                        jnp.ones(3), iters=100)
    assert float(lam) == pytest.approx(-4.0, abs=1e-12)
    assert abs(float(v[1])) == pytest.approx(1.0)
    assert float(res) < 1e-10
    # Too few iterations: the residual says so.
    _, _, res = study.power_iteration(lambda x: jnp.asarray(m) @ x, jnp.ones(3),
                                      iters=1)
    assert float(res) > 0.1


def test_neumann_radius():
    assert float(study.neumann_radius(0.5, 0.5, 2.0)) == pytest.approx(0.75)
    assert float(study.neumann_radius(1.0, 0.5, 2.5)) == pytest.approx(1.5)  # diverges
    # Indefinite: diverges, unless damping lifts the spectrum above zero.
    assert float(study.neumann_radius(0.1, -1.0, 2.0)) == pytest.approx(1.1)
    assert float(study.neumann_radius(0.1, -1.0, 2.0, damping=1.5)) == pytest.approx(
        0.95)


def _numpy_cg(M, v, iters):
    x, r = np.zeros_like(v), v.copy()
    p, rs = r.copy(), r @ r
    out = [x.copy()]
    for _ in range(iters):
        mp = M @ p
        step = rs / (p @ mp)
        x, r = x + step * p, r - step * mp
        rs_new = r @ r
        p, rs = r + rs_new / rs * p, rs_new
        out.append(x.copy())
    return out


@pytest.mark.parametrize("method", ["cg", "neumann"])
def test_implicit_trace(method):
    p, train, val, w, a = _setup()
    damp, alpha, iters = 0.1, 0.4, 4
    out = IMPLICIT_TRACE(train, val, w, a, p["tb"], p["vb"], method=method, iters=iters,
                               damping=damp, alpha=alpha, with_estimates=True)
    M, v = p["A"] + damp * np.eye(N_W), _v(p)
    if method == "cg":
        xs = _numpy_cg(M, v, iters)
    else:
        step = np.eye(N_W) - alpha * M
        xs = [alpha * sum(np.linalg.matrix_power(step, j) @ v for j in range(k + 1))
              for k in range(iters + 1)]
        # Closed form of the residual: M x_k - v = -(I - alpha M)^{k+1} v.
        np.testing.assert_allclose(
            np.asarray(out["relative_residual"]),
            [np.linalg.norm(np.linalg.matrix_power(step, k + 1) @ v) / np.linalg.norm(v)
             for k in range(iters + 1)], rtol=1e-10)
    res = [np.linalg.norm(M @ x - v) / np.linalg.norm(v) for x in xs]
    np.testing.assert_allclose(np.asarray(out["relative_residual"]), res, rtol=1e-8,
                               atol=1e-12)
    estimates = out["estimates"]
    assert jax.tree.structure(estimates) == jax.tree.structure(a)
    for k in range(iters + 1):
        g_k = jax.tree.map(lambda e: e[k], estimates)
        np.testing.assert_allclose(_flat(g_k), _implicit_closed_form(p, xs[k]), **TOL)
        if k not in (1, iters):
            continue
        # x_k is hypergrad.implicit's x after k iterations.
        ref = IMPLICIT(train, val, w, a, p["tb"], p["vb"], method=method, iters=k,
                          damping=damp, alpha=alpha)
        np.testing.assert_allclose(_flat(g_k), _flat(ref), **TOL)
    no_est = IMPLICIT_TRACE(train, val, w, a, p["tb"], p["vb"], method=method, iters=2,
                                  damping=damp, alpha=alpha)
    assert set(no_est) == {"relative_residual"}


def test_train_grad_norm():
    p, train, _, w, a = _setup()
    expected = np.linalg.norm(p["A"] @ p["w"] - p["B"] @ p["a"])
    assert float(study.train_grad_norm(train, w, a, p["tb"])) == pytest.approx(expected)


# ------------------------------------------------------------------ agreement


def test_agreement_hand_computed():
    e = {"x": jnp.array([1.0, -2.0]), "y": jnp.array([[0.0, 3.0]])}
    r = {"x": jnp.array([2.0, -1.0]), "y": jnp.array([[1.0, -3.0]])}
    out = AGREEMENT(e, r)
    assert set(out) == {"cosine", "relative_error", "norm_ratio", "sign_agreement"}
    assert float(out["cosine"]) == pytest.approx(-5 / np.sqrt(14 * 15))
    assert float(out["relative_error"]) == pytest.approx(np.sqrt(39 / 15))
    assert float(out["norm_ratio"]) == pytest.approx(np.sqrt(14 / 15))
    assert float(out["sign_agreement"]) == 0.5
    same = AGREEMENT(e, e)
    assert float(same["cosine"]) == pytest.approx(1.0)
    assert float(same["relative_error"]) == 0.0
    assert float(same["sign_agreement"]) == 1.0
    neg = AGREEMENT(jax.tree.map(jnp.negative, e), e)
    assert float(neg["cosine"]) == pytest.approx(-1.0)
    assert float(neg["sign_agreement"]) == pytest.approx(1 / 4)  # only the 0 matches
    eager = study.agreement(e, r)
    assert float(eager["cosine"]) == pytest.approx(float(out["cosine"]))


def test_agreement_zero_norms():
    z, x = jnp.zeros(3), jnp.array([1.0, 0.0, -2.0])
    both = AGREEMENT(z, z)
    assert [float(both[k]) for k in ("cosine", "relative_error", "norm_ratio",
                                     "sign_agreement")] == [1.0, 0.0, 1.0, 1.0]
    e0 = AGREEMENT(z, x)
    figures = [float(e0[k]) for k in ("cosine", "relative_error", "norm_ratio")]
    assert figures == [0, 1, 0]
    assert float(e0["sign_agreement"]) == pytest.approx(1 / 3)
    r0 = AGREEMENT(x, z)
    assert float(r0["cosine"]) == 0.0
    assert np.isinf(float(r0["relative_error"])) and np.isinf(float(r0["norm_ratio"]))
    empty = AGREEMENT({}, {})
    assert float(empty["sign_agreement"]) == 1.0 and float(empty["cosine"]) == 1.0
    with pytest.raises(ValueError, match="structure"):
        AGREEMENT({"a": x}, {"b": x})


def test_argmax_agreement():
    # Two leaves of [edges, ops]; the favoured op is the argmin of the gradient.
    g = {"n": jnp.array([[0.1, -0.5, 0.2], [0.3, 0.2, -0.1]]),
         "r": jnp.array([[1.0, 0.0]])}
    h = {"n": jnp.array([[-0.9, -0.5, 0.2], [0.0, 0.2, -0.1]]),
         "r": jnp.array([[2.0, -1.0]])}
    fav = study.favoured_ops(g)
    np.testing.assert_array_equal(fav["n"], [1, 2])
    np.testing.assert_array_equal(fav["r"], [1])
    assert float(ARGMAX_AGREEMENT(g, h)) == pytest.approx(2 / 3)
    assert float(ARGMAX_AGREEMENT(g, g)) == 1.0
    # Ops on axis 0 instead.
    gt = jax.tree.map(lambda x: x.T, g)
    ht = jax.tree.map(lambda x: x.T, h)
    assert float(ARGMAX_AGREEMENT(gt, ht, axis=0)) == pytest.approx(2 / 3)


# -------------------------------------------------------------- estimator cost


@pytest.mark.parametrize("name", sorted(estimators.REGISTRY))
def test_estimator_cost_counts_products(name, monkeypatch):
    """The table against counts made at run time: hvp / mixed_vjp calls, and loss
    evaluations (one per gradient or product)."""
    calls = {"hvp": 0, "mixed": 0}

    def counted(fn, kind):
        def wrapper(*args, **kwargs):
            jax.debug.callback(lambda: calls.__setitem__(kind, calls[kind] + 1))
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(hg, "hvp", counted(hg.hvp, "hvp"))
    monkeypatch.setattr(hg, "mixed_vjp", counted(hg.mixed_vjp, "mixed"))
    p, train, val, w, a = _setup()
    calls["loss"] = 0

    def counted_loss(loss):  # each gradient or product runs the loss forward once
        def wrapper(*args):
            jax.debug.callback(lambda: calls.__setitem__("loss", calls["loss"] + 1))
            return loss(*args)
        return wrapper

    est = estimators.get(name, implicit_iters=3)
    jax.block_until_ready(est(counted_loss(train), counted_loss(val), w, a, p["tb"],
                              p["vb"], lr=0.1, w_opt=None))
    jax.effects_barrier()
    cost = study.estimator_cost(name, implicit_iters=3)
    assert (calls["hvp"], calls["mixed"]) == (cost["hvps"], cost["mixed"])
    assert calls["loss"] == cost["gradients"] + cost["second_order"]
    assert cost["second_order"] == cost["hvps"] + cost["mixed"]
    assert set(study.DIRECT_STEPS) == set(estimators.REGISTRY)


# ------------------------------------------------------------------ tiny MLP


def _mlp_problem():
    rng = np.random.default_rng(3)
    params = {"w1": jnp.asarray(rng.normal(size=(3, 4)) * 0.7),
              "b1": jnp.asarray(rng.normal(size=4) * 0.1),
              "w2": jnp.asarray(rng.normal(size=(4, 2)) * 0.7)}
    arch = jnp.asarray(rng.normal(size=(2, 3)))  # 2 "edges" x 3 candidate activations

    def loss(w, a, batch):
        x, y = batch
        mix = jax.nn.softmax(a, axis=-1)
        pre = x @ w["w1"] + w["b1"]
        acts = jnp.stack([jnp.tanh(pre), jnp.sin(pre), pre])
        h = jnp.einsum("k,kbh->bh", mix[0], acts)
        out = h @ w["w2"]
        out = jnp.einsum("k,kbo->bo", mix[1], jnp.stack([out, jnp.tanh(out), out ** 2]))
        return jnp.mean((out - y) ** 2)

    def batch(seed):
        r = np.random.default_rng(seed)
        return jnp.asarray(r.normal(size=(6, 3))), jnp.asarray(r.normal(size=(6, 2)))

    return loss, params, arch, batch(10), batch(11)


def test_mlp_unrolled_against_darts_and_finite_differences():
    loss, w, a, tb, vb = _mlp_problem()
    lr = 0.1
    one = UNROLLED(loss, loss, w, a, tb, vb, lr=lr, steps=1)
    exact = DARTS_EXACT(loss, loss, w, a, tb, vb, lr=lr, method="exact")
    np.testing.assert_allclose(np.asarray(one), np.asarray(exact), rtol=1e-10,
                               atol=1e-12)

    def objective(arch):  # written out independently of jaxnas
        params = w
        for _ in range(3):
            g = jax.grad(loss)(params, arch, tb)
            params = jax.tree.map(lambda p, q: p - lr * q, params, g)
        return loss(params, arch, vb)

    objective = jax.jit(objective)
    three = np.asarray(UNROLLED(loss, loss, w, a, tb, vb, lr=lr, steps=3))
    h, fd, a_np = 1e-5, np.zeros(a.shape), np.asarray(a)
    for idx in np.ndindex(a.shape):
        e = np.zeros(a.shape)
        e[idx] = h
        fd[idx] = (objective(a_np + e) - objective(a_np - e)) / (2 * h)
    np.testing.assert_allclose(three, fd, rtol=1e-7, atol=1e-9)
    assert not np.allclose(three, np.asarray(one), atol=1e-4)  # 3 steps do differ
    # the adjoint recursion (forward-over-reverse products) is the same derivative
    adjoint = np.asarray(UNROLLED(loss, loss, w, a, tb, vb, lr=lr, steps=3,
                                  method="adjoint"))
    np.testing.assert_allclose(adjoint, three, rtol=1e-10, atol=1e-12)


def test_mlp_arch_hessian_and_implicit_reference():
    loss, w, a, tb, vb = _mlp_problem()
    hess = jax.jit(jax.hessian(loss, argnums=1))(w, a, vb).reshape(a.size, a.size)
    np.testing.assert_allclose(np.asarray(ARCH_EIGENVALUES(loss, w, a, vb)),
                               np.linalg.eigvalsh(np.asarray(hess)), rtol=1e-9,
                               atol=1e-12)
    # Dense reference: H and the mixed block by jax.hessian on the flat weights.
    flat, unravel = ravel_pytree(w)
    damp = 0.5
    H = jax.jit(jax.hessian(lambda f: loss(unravel(f), a, tb)))(flat)
    mixed = jax.jit(jax.jacobian(
        lambda aa: jax.grad(lambda f: loss(unravel(f), aa, tb))(flat)))(a)
    gw, ga = jax.jit(jax.grad(loss, argnums=(0, 1)))(w, a, vb)
    x = np.linalg.solve(np.asarray(H) + damp * np.eye(flat.size), _flat(gw))
    expected = np.asarray(ga) - np.einsum("wij,w->ij", np.asarray(mixed), x)
    out = IMPLICIT_REFERENCE(loss, loss, w, a, tb, vb, damping=damp)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-7, atol=1e-9)
