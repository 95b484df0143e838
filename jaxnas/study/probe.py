"""One study probe: every listed estimator, the references and the solver diagnostics
at one (weights, architecture) point. Each estimator, the unrolled reference, the direct
gradients and the alpha Hessian are their own compiled program (so each one's time and
memory are its own); the implicit reference, the CG/Neumann traces and the weight
Hessian run on the host (`host_linalg`) over one compiled Hessian-vector product.

`Prober(make_loss, settings)` takes ``make_loss(batch_stats) -> loss(params, arch,
batch)`` (the supernet's loss with BatchNorm statistics held, as in `jaxnas.hypergrad`)
and returns plain-Python figures from `prober(point)`; `summarize(records)` reduces the
probes of a search to the report's medians and fractions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxnas import hypergrad
from jaxnas.hypergrad import Loss
from jaxnas.strategies import estimators as estimators_lib
from jaxnas.study import figures, host_linalg, references, solvers
from jaxnas.types import PyTree

log = logging.getLogger("jaxnas")

ESTIMATORS = tuple(estimators_lib.REGISTRY)
HESSIAN_METHODS = ("lanczos", "power")
REFERENCES = ("unrolled", "implicit")


class Settings(NamedTuple):
    """What a probe computes (config.study) and the estimators' own settings
    (config.darts: fd_eps, implicit_iters, implicit_damping, neumann_alpha)."""

    estimators: tuple[str, ...] = ESTIMATORS
    unrolled_steps: int = 1
    implicit_tol: float = 1e-6
    implicit_max_iters: int = 200
    trace_iters: int = 10
    hessian_iters: int = 20
    hessian_method: str = "lanczos"
    arch_hessian: bool = True
    extra_fd_eps: tuple[float, ...] = ()
    fd_eps: float = 0.01
    implicit_iters: int = 5
    implicit_damping: float = 0.0
    neumann_alpha: float = 0.01


@dataclasses.dataclass(frozen=True)
class Point:
    """Where a probe looks: the search state's weights, BatchNorm statistics, arch
    parameters, weight-optimizer state and learning rate, and two fixed batches."""

    params: PyTree
    batch_stats: PyTree
    arch: PyTree
    w_opt: Any
    lr: Any
    train_batch: Any
    val_batch: Any


def _host(tree: Any) -> Any:
    """Arrays to Python floats and (nested) lists, for JSON."""
    return jax.tree.map(lambda x: np.asarray(x).tolist(), jax.device_get(tree))


class Prober:
    """Compiles each figure's program once (ahead of time, so its compile time, memory
    and run time are measured apart) and evaluates them at a `Point`."""

    def __init__(self, make_loss: Callable[[PyTree], Loss], settings: Settings, *,
                 key: jax.Array):
        unknown = [e for e in settings.estimators if e not in ESTIMATORS]
        if unknown or not settings.estimators:
            raise ValueError(f"study estimators {list(settings.estimators)!r}: expected a "
                             f"non-empty list of {', '.join(ESTIMATORS)}")
        if settings.hessian_method not in HESSIAN_METHODS:
            raise ValueError(f"hessian_method={settings.hessian_method!r}: expected one of "
                             f"{', '.join(HESSIAN_METHODS)}")
        self.settings = s = settings
        self.key = key
        self.cost: dict[str, dict[str, Any]] = {}
        self._compiled: dict[str, Any] = {}

        # fd_eps is an argument of every program, not a constant, so that finite
        # differences at every eps run one compiled program (compiling a second-order
        # program of a supernet takes minutes).
        def estimator_fn(name: str):
            def fn(params, batch_stats, arch, w_opt, lr, tb, vb, fd_eps):
                est = estimators_lib.get(
                    name, fd_eps=fd_eps, implicit_iters=s.implicit_iters,
                    implicit_damping=s.implicit_damping, neumann_alpha=s.neumann_alpha)
                loss = make_loss(batch_stats)
                return est(loss, loss, params, arch, tb, vb, lr=lr, w_opt=w_opt)
            return fn

        def with_loss(body):
            def fn(params, batch_stats, arch, w_opt, lr, tb, vb, fd_eps, *extra):
                del w_opt, fd_eps
                return body(make_loss(batch_stats), params, arch, lr, tb, vb, *extra)
            return fn

        T = s.unrolled_steps
        needed = list(s.estimators)
        if s.extra_fd_eps:
            needed += [n for n in ("darts_fd", "darts_exact") if n not in needed]
        programs: dict[str, Callable] = {f"estimator/{n}": estimator_fn(n)
                                         for n in needed}
        programs["reference/unrolled"] = with_loss(
            lambda loss, p, a, lr, tb, vb: references.unrolled(
                loss, loss, p, a, tb, vb, lr=lr, steps=T, method="adjoint"))
        steps_needed = sorted({0, T} | {references.DIRECT_STEPS[n] for n in s.estimators})
        programs["direct"] = with_loss(
            lambda loss, p, a, lr, tb, vb: {
                str(k): references.direct_gradient(loss, p, a, vb, train_loss=loss,
                                                   train_batch=tb, lr=lr, steps=k)
                for k in steps_needed})
        if s.arch_hessian:
            programs["arch_hessian"] = with_loss(
                lambda loss, p, a, lr, tb, vb: references.arch_hessian_eigenvalues(
                    loss, p, a, vb))

        # The implicit reference, the CG/Neumann traces and the weight Hessian run on
        # the host (host_linalg) over these three programs: one compiled product each
        # instead of several inlined into every loop program.
        def gradients(loss, p, a, lr, tb, vb):
            g_params, g_arch = jax.grad(loss, argnums=(0, 1))(p, a, vb)
            return {"v": ravel_pytree(g_params)[0], "g_arch": g_arch,
                    "train_grad_norm": solvers.train_grad_norm(loss, p, a, tb)}

        def hvp(loss, p, a, lr, tb, vb, x):
            unravel = ravel_pytree(p)[1]
            hx = hypergrad.hvp(lambda w: loss(w, a, tb), p, unravel(x))
            return ravel_pytree(hypergrad.tree_axpy(s.implicit_damping, unravel(x),
                                                    hx))[0]

        def mixed(loss, p, a, lr, tb, vb, x):
            return hypergrad.mixed_vjp(loss, p, a, tb, ravel_pytree(p)[1](x))

        programs["gradients"] = with_loss(gradients)
        programs["hvp"] = with_loss(hvp)
        programs["mixed"] = with_loss(mixed)
        self.programs = programs

    def _compile(self, name: str, args: tuple) -> None:
        """Compile program `name` for `args` once, recording its compile time and
        memory."""
        if name not in self._compiled:
            t0 = time.perf_counter()
            lowered = jax.jit(self.programs[name]).lower(*args)
            compiled = lowered.compile()
            cost = {"compile_seconds": time.perf_counter() - t0}
            try:
                mem = compiled.memory_analysis()
                cost["temp_bytes"] = int(mem.temp_size_in_bytes)
                cost["peak_bytes"] = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                         + mem.output_size_in_bytes)
            except Exception:  # noqa: BLE001 - not every backend reports memory
                pass
            self._compiled[name] = compiled
            self.cost[name] = cost
            log.info("study: compiled %s in %.1f s", name, cost["compile_seconds"])

    def _run(self, name: str, args: tuple) -> tuple[Any, float]:
        """(output, seconds) of program `name`, compiling it on first use."""
        self._compile(name, args)
        t0 = time.perf_counter()
        out = jax.block_until_ready(self._compiled[name](*args))
        return out, time.perf_counter() - t0

    def __call__(self, point: Point) -> dict[str, Any]:
        """Every figure at `point`, as plain Python (floats, lists)."""
        s = self.settings
        args = (point.params, point.batch_stats, point.arch, point.w_opt,
                jnp.asarray(point.lr), point.train_batch, point.val_batch,
                jnp.asarray(s.fd_eps))
        out: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for name in self.programs:
            if name not in ("hvp", "mixed"):
                out[name], seconds[name] = self._run(name, args)
        for eps in s.extra_fd_eps:  # the darts_fd program again, at another eps
            out[f"fd_eps/{eps:g}"], _ = self._run(
                "estimator/darts_fd", args[:-1] + (jnp.asarray(eps),))

        # Products on flat vectors: float64 on the host, the params' dtype on device.
        flat_dtype = ravel_pytree(point.params)[0].dtype
        for name in ("hvp", "mixed"):
            self._compile(name, args + (jnp.zeros(out["gradients"]["v"].shape,
                                                   flat_dtype),))
        products = {"hvp": 0}

        def mv(x: np.ndarray) -> np.ndarray:
            products["hvp"] += 1
            y, _ = self._run("hvp", args + (jnp.asarray(x, flat_dtype),))
            return np.asarray(y, np.float64)

        def hypergradient(x: np.ndarray) -> PyTree:
            """grad_a L_v - d2_{a,w} L_t . x"""
            m, _ = self._run("mixed", args + (jnp.asarray(x, flat_dtype),))
            return jax.tree.map(jnp.subtract, out["gradients"]["g_arch"], m)

        v = np.asarray(out["gradients"]["v"], np.float64)
        t0 = time.perf_counter()
        x, implicit_info = host_linalg.solve(mv, v, tol=s.implicit_tol,
                                             max_iters=s.implicit_max_iters)
        implicit = hypergradient(x)
        seconds["reference/implicit"] = time.perf_counter() - t0
        implicit_info["hvps"] = products["hvp"]

        unrolled = out["reference/unrolled"]
        direct = out["direct"]
        refs = {"unrolled": (unrolled, direct[str(s.unrolled_steps)]),
                "implicit": (implicit, direct["0"])}
        record: dict[str, Any] = {"estimators": {}}
        for name in s.estimators:
            est = out[f"estimator/{name}"]
            g1 = direct[str(references.DIRECT_STEPS[name])]
            _, g2 = figures.split(est, g1)
            entry = {"norm": hypergrad.tree_norm(est), "g2_norm": hypergrad.tree_norm(g2),
                     "seconds": seconds[f"estimator/{name}"],
                     **solvers.estimator_cost(name, implicit_iters=s.implicit_iters)}
            for ref_name, (ref, ref_g1) in refs.items():
                _, ref_g2 = figures.split(ref, ref_g1)
                entry[ref_name] = {
                    **figures.agreement(est, ref),
                    "argmax_agreement": figures.argmax_agreement(est, ref),
                    "g2_cosine": figures.agreement(g2, ref_g2)["cosine"]}
            record["estimators"][name] = entry
        if s.extra_fd_eps:  # finite differences' error against the exact product
            fd = {f"{eps:g}": out[f"fd_eps/{eps:g}"] for eps in s.extra_fd_eps}
            fd[f"{s.fd_eps:g}"] = out["estimator/darts_fd"]
            record["fd_eps"] = {k: figures.agreement(v, out["estimator/darts_exact"])
                                for k, v in fd.items()}
        record["references"] = {
            "unrolled_steps": s.unrolled_steps,
            "implicit_relative_residual": implicit_info["relative_residual"],
            "implicit_solver": implicit_info["solver"],
            "implicit_hvps": implicit_info["hvps"],
            "unrolled_vs_implicit": figures.agreement(unrolled, implicit),
            "seconds": {r: seconds[f"reference/{r}"] for r in REFERENCES}}
        record["solvers"] = {}
        iterates = {"cg": host_linalg.cg_iterates(mv, v, s.trace_iters),
                    "neumann": host_linalg.neumann_iterates(mv, v, s.trace_iters,
                                                            s.neumann_alpha)}
        for method, xs in iterates.items():
            record["solvers"][method] = {
                "relative_residual": [host_linalg.relative_residual(mv, xk, v)
                                      for xk in xs],
                "cosine_vs_implicit": [figures.agreement(hypergradient(xk),
                                                         implicit)["cosine"]
                                       for xk in xs]}
        v0 = np.asarray(ravel_pytree(solvers.random_like(self.key, point.params))[0],
                        np.float64)
        extremes = (host_linalg.lanczos_extremes if s.hessian_method == "lanczos"
                    else host_linalg.power_extremes)(mv, v0, s.hessian_iters)
        # mv is H + damping I; the record holds H's eigenvalues (neumann_radius adds
        # the damping itself)
        lam_max = extremes["max"] - s.implicit_damping
        lam_min = extremes["min"] - s.implicit_damping
        record["weight_hessian"] = {
            "max": lam_max, "min": lam_min,
            "neumann_radius": solvers.neumann_radius(s.neumann_alpha, lam_min, lam_max,
                                                     s.implicit_damping),
            "method": s.hessian_method}
        record["train_grad_norm"] = out["gradients"]["train_grad_norm"]
        if s.arch_hessian:
            eig = out["arch_hessian"]
            record["arch_hessian"] = {"max": eig[-1], "min": eig[0]}
        return _host(record)


def _median(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(vals)) if vals else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report over a search's probes: per estimator and reference the median cosine,
    relative error and argmax agreement, the fraction of probes with <g2', g2> > 0 (the
    Amended paper's claim), median seconds and their ratio to first order; finite
    differences' median error per eps; the alpha Hessian's dominant eigenvalue first,
    last and its least-squares slope per step."""
    if not records:
        return {"probes": 0}
    names = list(records[0]["estimators"])
    out: dict[str, Any] = {"probes": len(records), "estimators": {}}
    for name in names:
        entries = [r["estimators"][name] for r in records]
        e: dict[str, Any] = {"median_seconds": _median([x["seconds"] for x in entries]),
                             "hvps": entries[0]["hvps"], "mixed": entries[0]["mixed"],
                             "gradients": entries[0]["gradients"]}
        for ref in REFERENCES:
            e[ref] = {
                "median_cosine": _median([x[ref]["cosine"] for x in entries]),
                "median_relative_error": _median([x[ref]["relative_error"]
                                                  for x in entries]),
                "median_argmax_agreement": _median([x[ref]["argmax_agreement"]
                                                    for x in entries]),
                "fraction_g2_positive": float(np.mean([x[ref]["g2_cosine"] > 0
                                                       for x in entries]))}
        out["estimators"][name] = e
    base = out["estimators"].get("first_order", {}).get("median_seconds")
    for e in out["estimators"].values():
        e["seconds_vs_first_order"] = (e["median_seconds"] / base
                                       if base and e["median_seconds"] else None)
    if "fd_eps" in records[0]:
        out["fd_eps"] = {eps: {"median_relative_error_vs_exact": _median(
            [r["fd_eps"][eps]["relative_error"] for r in records])}
            for eps in records[0]["fd_eps"]}
    if "arch_hessian" in records[0]:
        steps = np.asarray([r["step"] for r in records], float)
        lam = np.asarray([r["arch_hessian"]["max"] for r in records], float)
        slope = float(np.polyfit(steps, lam, 1)[0]) if len(records) > 1 else 0.0
        out["arch_hessian_max"] = {"first": float(lam[0]), "last": float(lam[-1]),
                                   "slope_per_step": slope}
    return out
