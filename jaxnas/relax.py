"""Architecture relaxations: how continuous architecture parameters become the op weights a
supernet takes (softmax, Gumbel-softmax, sigmoid, Dirichlet), with optional penalty terms.

Two layers:

* contract functions over arrays or pytrees of arrays, acting on the last (op) axis of every
  leaf: `softmax`, `gumbel_softmax`, `sigmoid`, `dirichlet`;
* `Relaxation` values, one signature for all: ``weights(key, alphas, step) -> op weights``
  (what a search step feeds the supernet), ``penalty(alphas, step) -> scalar`` added to the
  architecture objective (None: no term), and ``expected(alphas) -> op weights``, the
  deterministic weights used to evaluate the supernet and to derive the discrete
  architecture. The bilevel core (`jaxnas.strategies.bilevel`) takes one;
  `get(name, **settings)` looks one up by name.

Random relaxations draw one independent sample per leaf: a pytree of several leaves splits
`key` once per leaf (in leaf order); a single array uses `key` itself.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp

from jaxnas.types import Array, PyTree

Schedule = Callable[[Array], Array]


# ------------------------------------------------------------------ contract functions


def softmax(alphas: PyTree) -> PyTree:
    """DARTS: softmax over the last axis of every leaf."""
    return jax.tree.map(lambda a: jax.nn.softmax(a, axis=-1), alphas)


def sigmoid(alphas: PyTree) -> PyTree:
    """FairDARTS: an independent sigmoid per op (an edge's weights need not sum to 1)."""
    return jax.tree.map(jax.nn.sigmoid, alphas)


def _leaf_keys(key: Array, tree: PyTree) -> PyTree:
    """One key per leaf of `tree`: `key` itself for a single leaf, else a split."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = [key] if len(leaves) == 1 else list(jax.random.split(key, len(leaves)))
    return jax.tree.unflatten(treedef, keys)


def _gumbel_leaf(key: Array, logits: Array, tau: Any, hard: bool) -> Array:
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + noise) / tau, axis=-1)
    if not hard:
        return soft
    index = jnp.argmax(soft, axis=-1)
    one_hot = jax.nn.one_hot(index, logits.shape[-1], dtype=soft.dtype)
    # Straight-through: `soft - stop_gradient(soft)` is exactly 0 in value (x - x), so the
    # value is the one-hot to the bit, while the gradient is that of the soft sample.
    return one_hot + (soft - jax.lax.stop_gradient(soft))


def gumbel_softmax(key: Array, logits: PyTree, *, tau: Any, hard: bool = False) -> PyTree:
    """softmax((logits + Gumbel noise) / tau) over the last axis of every leaf.

    hard=True (GDAS): the one-hot of that same sample's argmax in value, with the soft
    sample's gradient (straight-through). `tau` may be a traced scalar (an annealed
    temperature); it must be > 0.
    """
    return jax.tree.map(lambda k, a: _gumbel_leaf(k, a, tau, hard),
                        _leaf_keys(key, logits), logits)


def concentration(alphas: PyTree) -> PyTree:
    """DrNAS' Dirichlet concentration elu(alphas) + 1 (> 0 everywhere)."""
    return jax.tree.map(lambda a: jax.nn.elu(a) + 1.0, alphas)


def dirichlet(key: Array, alphas: PyTree) -> PyTree:
    """DrNAS: a sample of Dirichlet(elu(alphas) + 1) over the last axis of every leaf.

    Reparameterised: `jax.random.dirichlet` normalises Gamma draws whose gradient in the
    concentration is the implicit-reparameterisation (pathwise) one, so gradients flow from
    the sample to `alphas`.
    """
    return jax.tree.map(lambda k, c: jax.random.dirichlet(k, c, dtype=c.dtype),
                        _leaf_keys(key, alphas), concentration(alphas))


def dirichlet_mean(alphas: PyTree) -> PyTree:
    """The mean of Dirichlet(elu(alphas) + 1): the concentration over its sum."""
    return jax.tree.map(lambda c: c / jnp.sum(c, axis=-1, keepdims=True),
                        concentration(alphas))


# ---------------------------------------------------------------------- relaxation values


class WeightsFn(Protocol):
    def __call__(self, key: Array, alphas: PyTree, step: Array) -> PyTree: ...


class PenaltyFn(Protocol):
    def __call__(self, alphas: PyTree, step: Array) -> Array: ...


class Relaxation(NamedTuple):
    """Architecture parameters -> op weights, as the bilevel core uses them.

    weights(key, alphas, step): the op weights of a search step (may be random; `step` lets
      a temperature anneal); penalty(alphas, step): a scalar added to the architecture
      objective, or None; expected(alphas): deterministic weights for evaluation and
      derivation.
    """

    weights: WeightsFn
    expected: Callable[[PyTree], PyTree]
    penalty: Optional[PenaltyFn] = None
    # after_update(key, old_alphas, new_alphas, step) -> alphas: applied to the
    # architecture optimizer's result, with the key `weights` drew that half-step from
    # (ProxylessNAS' two-path rescaling); None: the optimizer's alphas are kept
    after_update: Optional[Callable[[Array, PyTree, PyTree, Array], PyTree]] = None


def _constant(value: Any) -> Schedule:
    return value if callable(value) else (lambda _: jnp.asarray(value, jnp.float32))


def softmax_relaxation() -> Relaxation:
    """DARTS: deterministic softmax weights, no penalty."""
    return Relaxation(weights=lambda key, alphas, step: softmax(alphas), expected=softmax)


def gumbel_relaxation(tau: Schedule | float = 1.0, *, hard: bool = False) -> Relaxation:
    """GDAS (hard=True) / SNAS (hard=False): a Gumbel-softmax sample per step at temperature
    `tau` (a constant or a schedule of the step); evaluation and derivation use softmax."""
    if not callable(tau) and not tau > 0:
        raise ValueError(f"tau={tau!r}: expected a temperature > 0")
    tau_fn = _constant(tau)
    return Relaxation(
        weights=lambda key, alphas, step: gumbel_softmax(key, alphas, tau=tau_fn(step),
                                                         hard=hard),
        expected=softmax)


def zero_one_penalty(weight: float) -> PenaltyFn:
    """FairDARTS' zero-one loss: -weight * mean((sigmoid(a) - 0.5)^2) over every op weight,
    pushing each sigmoid towards 0 or 1."""
    def penalty(alphas: PyTree, step: Array) -> Array:
        del step
        leaves = [jnp.ravel(jax.nn.sigmoid(a)) for a in jax.tree.leaves(alphas)]
        return -weight * jnp.mean((jnp.concatenate(leaves) - 0.5) ** 2)

    return penalty


def sigmoid_relaxation(zero_one_weight: float = 0.0) -> Relaxation:
    """FairDARTS: independent sigmoids, plus the zero-one penalty when its weight is > 0."""
    penalty = zero_one_penalty(zero_one_weight) if zero_one_weight else None
    return Relaxation(weights=lambda key, alphas, step: sigmoid(alphas), expected=sigmoid,
                      penalty=penalty)


def linear_schedule(start: float, end: float, total_steps: int) -> Schedule:
    """`start` at step 0 moving linearly to `end` at step `total_steps - 1`, then `end`
    (GDAS' temperature 10 -> 0.1, DARTS-' auxiliary skip 1 -> 0)."""
    span = max(int(total_steps) - 1, 1)

    def schedule(step: Array) -> Array:
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / span, 0.0, 1.0)
        # (1 - f) start + f end, not start + f (end - start): exactly `end` at f = 1
        return (1.0 - frac) * jnp.float32(start) + frac * jnp.float32(end)

    return schedule


def dirichlet_kl(alphas: PyTree, anchor: float = 1.0) -> Array:
    """Sum over every edge of KL(Dirichlet(elu(alphas) + 1) || Dirichlet(anchor, ..., anchor))
    in closed form (DrNAS' regulariser towards an anchor Dirichlet)."""
    from jax.scipy.special import digamma, gammaln

    def leaf(c: Array) -> Array:
        k = c.shape[-1]
        c0 = jnp.sum(c, axis=-1)
        b = jnp.asarray(anchor, c.dtype)
        log_norm = (gammaln(c0) - jnp.sum(gammaln(c), axis=-1)
                    - gammaln(k * b) + k * gammaln(b))
        return jnp.sum(log_norm + jnp.sum((c - b) * (digamma(c) - digamma(c0)[..., None]),
                                          axis=-1))

    return sum(leaf(c) for c in jax.tree.leaves(concentration(alphas)))


def dirichlet_relaxation(kl_weight: float = 0.0, anchor: float = 1.0) -> Relaxation:
    """DrNAS: a reparameterised Dirichlet sample per step; evaluation by its mean; with
    kl_weight > 0 the penalty kl_weight * KL(Dir(elu(a) + 1) || Dir(anchor)) (`dirichlet_kl`)."""
    if not anchor > 0:
        raise ValueError(f"anchor={anchor!r}: expected a concentration > 0")
    penalty = None
    if kl_weight:
        def penalty(alphas: PyTree, step: Array) -> Array:
            del step
            return kl_weight * dirichlet_kl(alphas, anchor)
    return Relaxation(weights=lambda key, alphas, step: dirichlet(key, alphas),
                      expected=dirichlet_mean, penalty=penalty)


def auxiliary_skip_relaxation(base: Relaxation, skip_index: int,
                              beta: Schedule | float) -> Relaxation:
    """DARTS-: `base`'s weights plus beta(step) on the skip_connect column of every edge.

    A mixed op is linear in its weights, so on an edge whose skip_connect is the identity
    (stride 1) this is exactly edge = mixed(x) + beta * x, the auxiliary skip. On the
    stride-2 edges of a reduction cell skip_connect is a FactorizedReduce: the auxiliary
    skip is then beta * FactorizedReduce(x) with that op's own parameters (shared, where
    DARTS-' code gives the auxiliary path separate ones). Evaluation and derivation use
    `base.expected` (no auxiliary skip: beta reaches 0 at the end of the search).
    """
    beta_fn = _constant(beta)

    def weights(key: Array, alphas: PyTree, step: Array) -> PyTree:
        w = base.weights(key, alphas, step)
        b = beta_fn(step)
        return jax.tree.map(lambda x: x.at[..., skip_index].add(b.astype(x.dtype)), w)

    return base._replace(weights=weights)


def node_softmax(betas: Array, groups: tuple[int, ...]) -> Array:
    """Softmax of `betas` (last axis: edges) within each run of consecutive edges whose
    lengths are `groups` (the edges into one node: PC-DARTS' edge normalisation)."""
    if sum(groups) != betas.shape[-1]:
        raise ValueError(f"node_softmax: groups {groups} cover {sum(groups)} edges, "
                         f"betas have {betas.shape[-1]}")
    parts, start = [], 0
    for n in groups:
        parts.append(jax.nn.softmax(betas[..., start:start + n], axis=-1))
        start += n
    return jnp.concatenate(parts, axis=-1)


EDGES_SUFFIX = "_edges"  # alphas[<cell> + EDGES_SUFFIX]: the edge logits of a cell type


def edge_normalized_relaxation(base: Relaxation, groups: tuple[int, ...]) -> Relaxation:
    """PC-DARTS' edge normalisation over `base`: architecture parameters
    ``{cell: a[E, K], cell + "_edges": b[E], ...}`` -> op weights
    ``{cell: base(a)[e, k] * node_softmax(b)[e]}``.

    A mixed op is linear in its op weights, so beta_e * sum_k w_k op_k(x) is the mixed op
    with weights beta_e * w_k: the edge weight is folded into the op weights and the
    supernet takes the same input as for DARTS (with partial channels its bypass is scaled
    by sum_k of those weights, = beta_e for a softmax base). Derivation on these weights
    ranks by alpha * beta, as PC-DARTS' `genotype()`. `groups`: the edges into each node,
    in edge order (DARTS cells: 2, 3, ..., steps + 1). The penalty is `base`'s, of the
    op logits only.
    """
    groups = tuple(int(n) for n in groups)

    def split(alphas: PyTree) -> tuple[dict, dict]:
        ops = {k: v for k, v in alphas.items() if not k.endswith(EDGES_SUFFIX)}
        edges = {k: alphas[k + EDGES_SUFFIX] for k in ops}
        return ops, edges

    def fold(w: dict, edges: dict) -> dict:
        return {k: w[k] * node_softmax(edges[k], groups)[..., None].astype(w[k].dtype)
                for k in w}

    def weights(key: Array, alphas: PyTree, step: Array) -> PyTree:
        ops, edges = split(alphas)
        return fold(base.weights(key, ops, step), edges)

    def expected(alphas: PyTree) -> PyTree:
        ops, edges = split(alphas)
        return fold(base.expected(ops), edges)

    penalty = None
    if base.penalty is not None:
        def penalty(alphas: PyTree, step: Array) -> Array:
            return base.penalty(split(alphas)[0], step)

    return Relaxation(weights=weights, expected=expected, penalty=penalty)


def binary_gates(alphas: Array, index: Array) -> Array:
    """ProxylessNAS' binary gates of the sampled ops `index` (one per row of `alphas`):
    the one-hot in value; in gradient the softmax's, so that for any loss L(g)

        dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i),   p = softmax(alphas),

    the paper's estimator (straight-through on the gates)."""
    p = jax.nn.softmax(alphas, axis=-1)
    g = jax.nn.one_hot(index, alphas.shape[-1], dtype=p.dtype)
    # p - stop_gradient(p) is exactly 0 in value, so the value is the one-hot to the bit
    return g + (p - jax.lax.stop_gradient(p))


def binary_gate_relaxation() -> Relaxation:
    """ProxylessNAS (one-path binarisation): each step samples one op per row from
    Categorical(softmax(alphas)) and feeds its one-hot `binary_gates`; evaluation and
    derivation use softmax. A supernet fed one-hot weights still computes every candidate
    and multiplies all but one by 0, which is also what the estimator needs: dL/dg_j is
    <dL/dy, op_j(x)> for every j."""

    def weights(key: Array, alphas: PyTree, step: Array) -> PyTree:
        del step
        return jax.tree.map(
            lambda k, a: binary_gates(a, jax.random.categorical(k, a, axis=-1)),
            _leaf_keys(key, alphas), alphas)

    return Relaxation(weights=weights, expected=softmax)


def _sample_pair(key: Array, alphas: Array) -> Array:
    """Two distinct ops per row of `alphas`, drawn without replacement from
    softmax(alphas) (the Gumbel top-2: the order of the draws, as
    `torch.multinomial(p, 2, replacement=False)`): int32[..., 2]."""
    noise = jax.random.gumbel(key, alphas.shape, alphas.dtype)
    return jax.lax.top_k(alphas + noise, 2)[1].astype(jnp.int32)


def two_path_gates(key: Array, alphas: Array) -> tuple[Array, Array]:
    """ProxylessNAS' two-path binarisation of each row of `alphas` f[..., K]: a pair of
    ops drawn without replacement from softmax(alphas), then one of the pair active with
    probability q = softmax(alphas[pair]). Returns (gates f[..., K], pair int32[..., 2]):
    the gates are the active op's one-hot in value and in gradient q's (0 outside the
    pair), so for any loss L(g), for i in the pair,

        dL/dalpha_i = sum_{j in pair} dL/dg_j q_j (delta_ij - q_i),

    and 0 for the other ops: the paper's estimator over the two sampled paths, which
    needs only those two ops' outputs (dL/dg_j = <dL/dy, op_j(x)>)."""
    k_pair, k_active = jax.random.split(key)
    pair = _sample_pair(k_pair, alphas)
    pair_alphas = jnp.take_along_axis(alphas, pair, axis=-1)
    active = jnp.take_along_axis(
        pair, jax.random.categorical(k_active, pair_alphas, axis=-1)[..., None], -1)[..., 0]
    slots = jax.nn.one_hot(pair, alphas.shape[-1], dtype=alphas.dtype)  # [..., 2, K]
    q = jnp.einsum("...m,...mk->...k", jax.nn.softmax(pair_alphas, axis=-1), slots)
    gates = jax.nn.one_hot(active, alphas.shape[-1], dtype=alphas.dtype)
    return gates + (q - jax.lax.stop_gradient(q)), pair


def rescale_pair(pair: Array, old: Array, new: Array) -> Array:
    """ProxylessNAS' `rescale_updated_arch_param`: shift the updated alphas of each row's
    pair by one constant so that their logsumexp is what it was before the update (the
    two ops trade probability with each other only, not with the unsampled ops, whose
    alphas are left as the optimizer made them)."""
    old_pair = jnp.take_along_axis(old, pair, axis=-1)
    new_pair = jnp.take_along_axis(new, pair, axis=-1)
    offset = (jax.nn.logsumexp(new_pair, axis=-1) - jax.nn.logsumexp(old_pair, axis=-1))
    in_pair = jnp.sum(jax.nn.one_hot(pair, new.shape[-1], dtype=new.dtype), axis=-2)
    return new - in_pair * offset[..., None]


def two_path_relaxation() -> Relaxation:
    """ProxylessNAS with two sampled paths (`two_path_gates` on every row of every leaf)
    and the paper's rescaling after each architecture update. The weights carry the
    pairs for the supernet to run only those ops: for a dict of alphas, the gates under
    the alphas' keys plus ``"paths"`` (the pairs, shaped like the alphas' tree); for a
    single array, ``{"weights": gates, "paths": pairs}``. Evaluation and derivation:
    softmax."""

    def sample(key: Array, alphas: PyTree) -> tuple[PyTree, PyTree]:
        leaves, treedef = jax.tree.flatten(alphas)
        keys = jax.tree.leaves(_leaf_keys(key, alphas))
        drawn = [two_path_gates(k, a) for k, a in zip(keys, leaves)]
        return (jax.tree.unflatten(treedef, [g for g, _ in drawn]),
                jax.tree.unflatten(treedef, [p for _, p in drawn]))

    def weights(key: Array, alphas: PyTree, step: Array) -> PyTree:
        del step
        gates, pairs = sample(key, alphas)
        if isinstance(gates, dict):
            if "paths" in gates:
                raise ValueError("two-path gates: the alphas already have a 'paths' key")
            return {**gates, "paths": pairs}
        return {"weights": gates, "paths": pairs}

    def after_update(key: Array, old: PyTree, new: PyTree, step: Array) -> PyTree:
        del step
        pairs = sample(key, old)[1]  # the pairs `weights` drew from this key
        return jax.tree.map(rescale_pair, pairs, old, new)

    return Relaxation(weights=weights, expected=softmax, after_update=after_update)


RELAXATIONS: dict[str, Callable[..., Relaxation]] = {
    "softmax": softmax_relaxation,
    "gumbel": gumbel_relaxation,
    "sigmoid": sigmoid_relaxation,
    "dirichlet": dirichlet_relaxation,
}


def get(name: str, **settings: Any) -> Relaxation:
    """The relaxation registered as `name`, built with `settings`."""
    if name not in RELAXATIONS:
        raise ValueError(f"relaxation {name!r}: expected one of {', '.join(RELAXATIONS)}")
    return RELAXATIONS[name](**settings)
