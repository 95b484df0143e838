"""Tests for the study probe (jaxnas.study.probe) on a quadratic bilevel problem whose
hypergradients, Hessians and solver limits are known in closed form (float64), and for
the summary it reduces probes to."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.study import probe as probe_lib

N_W, E, K = 4, 2, 3   # weights; arch leaf [E edges, K ops]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(N_W, N_W))
    A = q @ q.T + N_W * np.eye(N_W)               # SPD weight Hessian of L_train
    B = rng.normal(size=(N_W, E * K))
    D = np.diag(rng.uniform(0.5, 2.0, E * K))     # alpha Hessian of L_val
    Emat = 0.3 * rng.normal(size=(N_W, E * K))
    t = rng.normal(size=N_W)
    return {k: jnp.asarray(v) for k, v in dict(A=A, B=B, D=D, E=Emat, t=t).items()}


def _make_loss(P):
    """make_loss(batch_stats) -> loss(params, arch, batch): train and val in one loss,
    told apart by the batch's "val" flag (the probe uses one loss for both, as the
    supernet does)."""
    def make_loss(batch_stats):
        scale = batch_stats["scale"]

        def loss(params, arch, batch):
            w, a = params["w"], arch["normal"].ravel()
            train = (0.5 * w @ P["A"] @ w - w @ P["B"] @ a - w @ batch["b"]) * scale
            val = 0.5 * jnp.sum((w - P["t"]) ** 2) + 0.5 * a @ P["D"] @ a + w @ P["E"] @ a
            return jnp.where(batch["val"], val, train)
        return loss
    return make_loss


def _point(P, lr=0.05):
    rng = np.random.default_rng(1)
    return probe_lib.Point(
        params={"w": jnp.asarray(rng.normal(size=N_W))}, batch_stats={"scale": 1.0},
        arch={"normal": jnp.asarray(rng.normal(size=(E, K)))}, w_opt=(), lr=lr,
        train_batch={"b": jnp.asarray(rng.normal(size=N_W)), "val": False},
        val_batch={"b": jnp.zeros(N_W), "val": True})


def _closed_forms(P, pt):
    w, a = np.asarray(pt.params["w"]), np.asarray(pt.arch["normal"]).ravel()
    A, B, D, Em, t = (np.asarray(P[k]) for k in "A B D E t".split())
    lr = pt.lr
    g_w_val = w - t + Em @ a
    # implicit: grad_a val - d2_{a,w} train . A^-1 grad_w val, d2_{a,w} train = -B^T
    implicit = D @ a + Em.T @ w + B.T @ np.linalg.solve(A, g_w_val)
    # one unrolled SGD step: w1 = w - lr (A w - B a - b); d/da val(w1(a), a)
    b = np.asarray(pt.train_batch["b"])
    w1 = w - lr * (A @ w - B @ a - b)
    unrolled = D @ a + Em.T @ w1 + lr * B.T @ (w1 - t + Em @ a)
    return implicit, unrolled, np.linalg.eigvalsh(A), np.linalg.eigvalsh(D)


SETTINGS = probe_lib.Settings(
    estimators=("first_order", "darts_exact", "darts_fd", "implicit_cg"),
    unrolled_steps=1, implicit_tol=1e-12, implicit_max_iters=100, trace_iters=N_W,
    hessian_iters=N_W, hessian_method="lanczos", arch_hessian=True,
    extra_fd_eps=(1e-4,), implicit_iters=N_W)


@pytest.fixture(scope="module")
def probed():
    with jax.enable_x64(True):
        P = _problem()
        pt = _point(P)
        prober = probe_lib.Prober(_make_loss(P), SETTINGS, key=jax.random.key(0))
        return P, pt, prober, prober(pt)


def test_estimators_against_closed_form_references(probed):
    P, pt, _, rec = probed
    implicit, unrolled, _, _ = _closed_forms(P, pt)
    est = rec["estimators"]
    # darts_exact is the unrolled reference at T=1 (the contract of study.unrolled)
    assert est["darts_exact"]["unrolled"]["relative_error"] < 1e-10
    assert est["darts_exact"]["unrolled"]["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert est["darts_exact"]["unrolled"]["argmax_agreement"] == 1.0
    # CG with as many iterations as weights solves the quadratic's system exactly
    assert est["implicit_cg"]["implicit"]["relative_error"] < 1e-8
    # first order has no part through the weights: its g2 is zero
    assert est["first_order"]["g2_norm"] == 0.0
    # the references themselves agree with each other as the closed forms do
    cos = implicit @ unrolled / np.linalg.norm(implicit) / np.linalg.norm(unrolled)
    assert rec["references"]["unrolled_vs_implicit"]["cosine"] == pytest.approx(cos,
                                                                               rel=1e-10)
    assert rec["references"]["implicit_relative_residual"] < 1e-10
    # first order against the implicit reference: cosine of grad_a val and `implicit`
    w, a = np.asarray(pt.params["w"]), np.asarray(pt.arch["normal"]).ravel()
    g1 = np.asarray(P["D"]) @ a + np.asarray(P["E"]).T @ w
    cos1 = g1 @ implicit / np.linalg.norm(g1) / np.linalg.norm(implicit)
    assert est["first_order"]["implicit"]["cosine"] == pytest.approx(cos1, rel=1e-10)
    # cost table: implicit_cg does implicit_iters Hessian-vector products
    assert est["implicit_cg"]["hvps"] == N_W and est["first_order"]["hvps"] == 0


def test_solver_traces_and_hessians_against_closed_forms(probed):
    P, pt, _, rec = probed
    _, _, eig_w, eig_a = _closed_forms(P, pt)
    cg = rec["solvers"]["cg"]
    assert len(cg["cosine_vs_implicit"]) == N_W + 1
    assert cg["cosine_vs_implicit"][-1] == pytest.approx(1.0, abs=1e-9)  # n CG steps
    assert cg["relative_residual"][-1] < 1e-8 < cg["relative_residual"][0]
    wh = rec["weight_hessian"]
    assert wh["max"] == pytest.approx(eig_w[-1], rel=1e-8)
    assert wh["min"] == pytest.approx(eig_w[0], rel=1e-6)
    radius = max(abs(1 - SETTINGS.neumann_alpha * eig_w[0]),
                 abs(1 - SETTINGS.neumann_alpha * eig_w[-1]))
    assert wh["neumann_radius"] == pytest.approx(radius, rel=1e-6)
    assert rec["arch_hessian"]["max"] == pytest.approx(eig_a[-1], rel=1e-10)
    assert rec["arch_hessian"]["min"] == pytest.approx(eig_a[0], rel=1e-10)
    # the train gradient's norm at the point
    w, a = np.asarray(pt.params["w"]), np.asarray(pt.arch["normal"]).ravel()
    g = np.asarray(P["A"]) @ w - np.asarray(P["B"]) @ a - np.asarray(pt.train_batch["b"])
    assert rec["train_grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-10)
    # finite differences are exact up to rounding on a loss bilinear in (w, a)
    assert set(rec["fd_eps"]) == {"0.0001", "0.01"}  # the extra eps and darts.fd_eps
    for eps, figures in rec["fd_eps"].items():
        assert figures["relative_error"] < 1e-5, eps


def test_each_program_is_compiled_once_and_costed(probed):
    P, pt, prober, _ = probed
    before = dict(prober.cost)
    prober(pt)  # a second probe reuses every compiled program
    assert prober.cost == before
    assert {"estimator/first_order", "reference/unrolled", "gradients", "hvp", "mixed",
            "arch_hessian"} <= set(prober.cost)
    # finite differences at every eps are one program, eps its argument
    assert not any(name.startswith("fd_eps") for name in prober.cost)
    assert all(c["compile_seconds"] > 0 for c in prober.cost.values())


def test_summary_medians_and_fractions():
    def rec(step, cos, g2, sec):
        entry = lambda c, g: {"cosine": c, "relative_error": 1 - c,  # noqa: E731
                              "argmax_agreement": c, "g2_cosine": g}
        return {"step": step,
                "estimators": {"first_order": {"seconds": 1.0, "hvps": 0, "mixed": 0,
                                               "gradients": 1,
                                               "unrolled": entry(0.5, 0.0),
                                               "implicit": entry(0.5, 0.0)},
                               "amended": {"seconds": sec, "hvps": 1, "mixed": 1,
                                           "gradients": 1, "unrolled": entry(cos, g2),
                                           "implicit": entry(cos, g2)}},
                "arch_hessian": {"max": 2.0 * step + 1.0}}
    recs = [rec(0, 0.1, 0.3, 3.0), rec(10, 0.5, -0.2, 5.0), rec(20, 0.9, 0.1, 4.0)]
    s = probe_lib.summarize(recs)
    a = s["estimators"]["amended"]
    assert a["unrolled"]["median_cosine"] == pytest.approx(0.5)
    assert a["implicit"]["fraction_g2_positive"] == pytest.approx(2 / 3)
    assert s["estimators"]["first_order"]["unrolled"]["fraction_g2_positive"] == 0.0
    assert a["seconds_vs_first_order"] == pytest.approx(4.0)
    assert s["arch_hessian_max"] == {"first": 1.0, "last": 41.0,
                                     "slope_per_step": pytest.approx(2.0)}


def test_bad_settings_are_refused_before_compiling():
    P = _problem()
    with pytest.raises(ValueError, match="study estimators.*first_order"):
        probe_lib.Prober(_make_loss(P), probe_lib.Settings(estimators=("nope",)),
                         key=jax.random.key(0))
    with pytest.raises(ValueError, match="hessian_method='qr'"):
        probe_lib.Prober(_make_loss(P), probe_lib.Settings(hessian_method="qr"),
                         key=jax.random.key(0))


def test_plots_of_probed_records(probed, tmp_path):
    from jaxnas.study import plots

    P, pt, prober, rec = probed
    records = []
    for step in (10, 20):
        r = dict(rec, step=step,
                 arch_weights={"normal": jax.nn.softmax(pt.arch["normal"], -1).tolist()})
        records.append(r)
    payload = {"settings": {"unrolled_steps": 1}, "records": records,
               "primitives": ["a", "b", "c"], "summary": probe_lib.summarize(records)}
    plots.write_all(payload, str(tmp_path))
    for name in ("study_cosine", "study_solvers", "study_eigenvalues", "study_alphas"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000, name
    assert payload["summary"]["probes"] == 2
    # identical probes: a zero eigenvalue trend
    assert payload["summary"]["arch_hessian_max"]["slope_per_step"] == pytest.approx(0.0)
