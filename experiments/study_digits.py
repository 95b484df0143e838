"""Studying the hypergradient estimators along a DARTS search on the embedded digits.

Run:
  jaxnas study --config experiments/study_digits.py --workdir runs/study_digits

The search is experiments/darts_digits.py's (first-order DARTS drives it) on a smaller
supernet (C=4, 3 cells, 3 nodes) so that every estimator and both references compile and
run in minutes on a CPU. Every `study.every` steps, on one fixed training and one fixed
validation batch, each of the six estimators is compared with the unrolled reference
(`study.unrolled_steps` SGD steps, autodiff through them: DARTS' objective) and with
the implicit-function reference (the linear system solved to `study.implicit_tol`);
finite differences are also taken at `study.extra_fd_eps`; CG and Neumann are traced
for `study.trace_iters` iterations; the weight Hessian's extreme eigenvalues come from
`study.hessian_iters` Lanczos steps and the alpha Hessian's exactly. Results:
DIR/study.json (summary first) and DIR/study_{cosine,solvers,eigenvalues,alphas}.png.
`--from DIR` probes the checkpoints an earlier search left instead (set
--config.keep_checkpoints high in that search to keep many). A run of it, with the
figures and what they say: experiments/results/study_digits/notes.md.
"""

import ml_collections

from experiments import darts_digits


def get_config() -> ml_collections.ConfigDict:
    config = darts_digits.get_config()
    config.epochs = 10
    config.checkpoint_every = 20
    config.keep_checkpoints = 20
    config.model.channels = 4
    config.model.layers = 3
    config.model.steps = 3
    config.model.multiplier = 3
    config.darts.warmup_epochs = 2

    config.study = ml_collections.ConfigDict()
    config.study.every = 20               # steps between probes (and one at the end)
    config.study.estimators = ("first_order", "darts_fd", "darts_exact", "amended",
                               "implicit_cg", "implicit_neumann")
    config.study.unrolled_steps = 1       # T of the unrolled reference
    config.study.implicit_tol = 1e-6      # relative residual of the implicit reference
    config.study.implicit_max_iters = 200
    config.study.trace_iters = 10         # CG / Neumann iterations traced
    config.study.hessian_iters = 20       # Lanczos steps for the weight Hessian
    config.study.hessian_method = "lanczos"
    config.study.arch_hessian = True      # exact alpha Hessian eigenvalues
    config.study.extra_fd_eps = (1e-3, 1e-4)  # besides darts.fd_eps (DARTS: 0.01)
    config.study.seed = 0                 # probe batches and Lanczos start vector
    return config
