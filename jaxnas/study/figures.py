"""Agreement figures between an estimate and a reference: cosine, errors, signs, the
op each edge's update favours, and the split into direct and through-weights parts."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

PyTree = Any


def _flat_pair(estimate: PyTree, reference: PyTree) -> tuple[jax.Array, jax.Array]:
    if jax.tree.structure(estimate) != jax.tree.structure(reference):
        raise ValueError("estimate and reference are pytrees of different structure: "
                         f"{jax.tree.structure(estimate)} vs "
                         f"{jax.tree.structure(reference)}")
    e, r = ravel_pytree(estimate)[0], ravel_pytree(reference)[0]
    if e.shape != r.shape:
        raise ValueError(f"estimate has {e.size} entries, reference {r.size}")
    dtype = jnp.promote_types(jnp.result_type(e, r), jnp.float32)
    return e.astype(dtype), r.astype(dtype)


def agreement(estimate: PyTree, reference: PyTree) -> dict[str, jax.Array]:
    """How well `estimate` matches `reference` (pytrees of one structure), flattened:

      cosine         <e, r> / (||e|| ||r||)
      relative_error ||e - r|| / ||r||
      norm_ratio     ||e|| / ||r||
      sign_agreement fraction of entries with sign(e_i) == sign(r_i) (0 is its own sign)

    Zero norms (the undefined cases) are given the values that keep medians over probes
    meaningful: both zero is perfect agreement (cosine 1, relative_error 0, norm_ratio
    1); only e zero: cosine 0, relative_error 1, norm_ratio 0; only r zero: cosine 0,
    relative_error and norm_ratio inf. No entries at all: sign_agreement 1.
    Scalar arrays, in the inputs' (at least float32) precision; jittable.
    """
    e, r = _flat_pair(estimate, reference)
    ne, nr = jnp.linalg.norm(e), jnp.linalg.norm(r)
    e_zero, r_zero = ne == 0, nr == 0
    one = jnp.ones_like(ne)
    denom = jnp.where(e_zero | r_zero, one, ne * nr)
    cosine = jnp.where(e_zero & r_zero, one,
                       jnp.where(e_zero | r_zero, 0 * one, jnp.vdot(e, r) / denom))
    safe_nr = jnp.where(r_zero, one, nr)
    inf = jnp.full_like(ne, jnp.inf)
    relative_error = jnp.where(r_zero, jnp.where(e_zero, 0 * one, inf),
                               jnp.linalg.norm(e - r) / safe_nr)
    norm_ratio = jnp.where(r_zero, jnp.where(e_zero, one, inf), ne / safe_nr)
    same = jnp.sign(e) == jnp.sign(r)
    sign_agreement = jnp.mean(same.astype(ne.dtype)) if e.size else one
    return {"cosine": cosine, "relative_error": relative_error,
            "norm_ratio": norm_ratio, "sign_agreement": sign_agreement}


def favoured_ops(grad: PyTree, *, axis: int = -1) -> PyTree:
    """Per edge, the op a descent step on this arch gradient raises the most: the argmin
    of the gradient over the op axis (ties: the first such op), int32 per leaf."""
    return jax.tree.map(lambda g: jnp.argmin(g, axis=axis).astype(jnp.int32), grad)


def argmax_agreement(estimate: PyTree, reference: PyTree, *,
                     axis: int = -1) -> jax.Array:
    """Fraction of edges on which two arch gradients favour the same op
    (`favoured_ops`: the argmax of the update -g, hence the name), over every edge of
    every leaf (each leaf [..., num_ops], the ops on `axis`)."""
    if jax.tree.structure(estimate) != jax.tree.structure(reference):
        raise ValueError("estimate and reference are pytrees of different structure")
    same = jax.tree.leaves(jax.tree.map(jnp.equal, favoured_ops(estimate, axis=axis),
                                        favoured_ops(reference, axis=axis)))
    total = sum(s.size for s in same)
    if total == 0:
        return jnp.ones((), jnp.float32)
    return sum(jnp.sum(s) for s in same) / total


def split(estimate: PyTree, direct: PyTree) -> tuple[PyTree, PyTree]:
    """g = g1 + g2: (g1, g2) with g1 = `direct` (grad_a L_v with the weights held fixed,
    `references.direct_gradient`) and g2 = estimate - g1, the part through the weights.

    The Amended-gradient claim (Bi et al.) is <g2_estimate, g2_reference> > 0; compare
    g2s with `agreement` (its cosine has that sign).
    """
    return direct, jax.tree.map(jnp.subtract, estimate, direct)
