"""REINFORCE over a discrete space (Zoph & Le 2017; Williams 1992), ask/tell, batched.

The controller is a factorised categorical policy: one logit vector per decision
(layer), ``p(a) = prod_l softmax(logits_l)[a_l]``; layers with fewer choices than the
widest mask their extra logits out.  ``controller="lstm"`` uses the autoregressive
LSTM controller of NAS/ENAS instead (`LSTMController`).  A step samples ``B`` architectures (`ask`),
evaluates them in one ``fitness_fn`` call and updates the logits (`tell`) by Adam
(optax) on the ascent direction

    g = (1 / B) sum_b (r_b - baseline) grad log p(a_b) + entropy_weight * grad H(p)

(`policy_gradient`), where the baseline is an exponential moving average of the
batch-mean reward (``baseline <- decay * baseline + (1 - decay) * mean(r)``; the
first batch uses its own mean), taken before it absorbs the current batch.  Rewards
that are not finite (NaN, +-inf) get zero weight in the gradient and never count as
best, as in `jaxnas.strategies.evolution`.

`reinforce` runs the whole search as one `jax.jit` (a `jax.lax.scan` over steps) with
``fitness_fn`` static: ``int32[B, L] -> float32[B]``, higher is better, the same
convention as `regularized_evolution`, and returns the same fields (``best_arch``,
``best_fitness``, ``history``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxnas.strategies.evolution import History, _as_num_choices
from jaxnas.types import Array

FitnessFn = Callable[[Array], Array]  # int32[N, L] -> float32[N]
MASKED = -1e30  # the logit of a choice a layer does not have
CONTROLLERS = ("factorised", "lstm")


def choice_mask(num_choices: Sequence[int]) -> np.ndarray:
    """bool[L, K]: which logits are real choices (K = the widest layer)."""
    counts = np.asarray(num_choices)
    return np.arange(counts.max())[None, :] < counts[:, None]


def log_policy(logits: Array, num_choices: Sequence[int]) -> Array:
    """Per-layer log-probabilities float[L, K] (about -1e30, probability exactly 0,
    outside each layer's choices: a finite value, as -inf gives NaN gradients)."""
    mask = jnp.asarray(choice_mask(num_choices))
    return jax.nn.log_softmax(jnp.where(mask, logits, MASKED), axis=-1)


def log_prob(logits: Array, num_choices: Sequence[int], archs: Array) -> Array:
    """``log p(a)`` float[N] of architectures int32[N, L] under the policy."""
    logp = log_policy(logits, num_choices)
    picked = jnp.take_along_axis(logp[None], archs[:, :, None].astype(jnp.int32),
                                 axis=2)[..., 0]
    return picked.sum(axis=1)


def entropy(logits: Array, num_choices: Sequence[int]) -> Array:
    """Entropy of the factorised policy: the sum of the layers' entropies."""
    logp = log_policy(logits, num_choices)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0))


def sample(key: Array, logits: Array, num_choices: Sequence[int], n: int) -> Array:
    """``n`` architectures int32[n, L] drawn from the policy."""
    logp = log_policy(logits, num_choices)
    return jax.random.categorical(key, logp, axis=-1,
                                  shape=(n, logp.shape[0])).astype(jnp.int32)


def policy_gradient(logits: Array, num_choices: Sequence[int], archs: Array,
                    advantages: Array, weights: Array,
                    entropy_weight: float = 0.0) -> Array:
    """Ascent direction ``sum_b w_b adv_b grad log p(a_b) + entropy_weight grad H``
    with respect to the logits (float[L, K]; zero outside each layer's choices).

    ``tell`` uses ``w_b = 1 / B`` over the finite rewards; with every architecture of
    a space and ``w = p(a)`` it is the exact gradient of ``E_p[f(a)]`` (tested)."""
    def objective(lg):
        return (jnp.sum(jax.lax.stop_gradient(weights * advantages)
                        * log_prob(lg, num_choices, archs))
                + entropy_weight * entropy(lg, num_choices))

    grad = jax.grad(objective)(logits)
    return jnp.where(jnp.asarray(choice_mask(num_choices)), grad, 0.0)


@dataclasses.dataclass(frozen=True)
class LSTMController:
    """The autoregressive controller of NAS/ENAS (Zoph & Le 2017; Pham et al. 2018):
    an LSTM whose input at decision ``l`` is the embedding of decision ``l - 1``'s
    choice (a start token first), with one softmax head per decision (masked to the
    layer's choices): ``p(a) = prod_l p(a_l | a_<l)``.

    Its entropy (the bonus) is the mean over the given architectures of the summed
    per-decision entropies along their prefixes, as in ENAS (the exact entropy of a
    sequence model has no closed form)."""

    num_choices: tuple[int, ...]
    hidden: int = 32

    def init(self, key: Array) -> dict:
        h, k, l = self.hidden, max(self.num_choices), len(self.num_choices)
        ks = jax.random.split(key, 3)
        u = lambda k_, shape, fan: jax.random.uniform(  # noqa: E731
            k_, shape, minval=-1.0, maxval=1.0) / np.sqrt(fan)
        return {"embed": u(ks[0], (k + 1, h), 1.0) * 0.1,
                "w": u(ks[1], (2 * h, 4 * h), 2 * h), "b": jnp.zeros(4 * h),
                # zero heads: the controller starts exactly uniform
                "head_w": jnp.zeros((l, h, k)), "head_b": jnp.zeros((l, k))}

    def _cell(self, p: dict, h: Array, c: Array, token: Array):
        z = jnp.concatenate([p["embed"][token], h], -1) @ p["w"] + p["b"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c

    def _step_logp(self, p: dict, h: Array, layer: int) -> Array:
        mask = jnp.asarray(choice_mask(self.num_choices))[layer]
        logits = h @ p["head_w"][layer] + p["head_b"][layer]
        return jax.nn.log_softmax(jnp.where(mask, logits, MASKED), axis=-1)

    def _unroll(self, p: dict, archs: Array):
        """Per-decision log-probabilities float[N, L, K] with teacher forcing."""
        n = archs.shape[0]
        h = c = jnp.zeros((n, self.hidden), p["w"].dtype)
        token = jnp.full((n,), max(self.num_choices), jnp.int32)  # start token
        out = []
        for l in range(len(self.num_choices)):  # L is small: unrolled
            h, c = self._cell(p, h, c, token)
            out.append(self._step_logp(p, h, l))
            token = archs[:, l].astype(jnp.int32)
        return jnp.stack(out, axis=1)

    def log_prob(self, p: dict, archs: Array) -> Array:
        logp = self._unroll(p, archs)
        return jnp.take_along_axis(logp, archs[:, :, None].astype(jnp.int32),
                                   axis=2)[..., 0].sum(axis=1)

    def entropy(self, p: dict, archs: Array) -> Array:
        logp = self._unroll(p, archs)
        q = jnp.exp(logp)
        return -jnp.mean(jnp.sum(jnp.where(q > 0, q * logp, 0.0), axis=(1, 2)))

    def sample(self, key: Array, p: dict, n: int) -> Array:
        h = c = jnp.zeros((n, self.hidden), p["w"].dtype)
        token = jnp.full((n,), max(self.num_choices), jnp.int32)
        keys = jax.random.split(key, len(self.num_choices))
        out = []
        for l in range(len(self.num_choices)):
            h, c = self._cell(p, h, c, token)
            token = jax.random.categorical(keys[l], self._step_logp(p, h, l),
                                           axis=-1).astype(jnp.int32)
            out.append(token)
        return jnp.stack(out, axis=1)

    def greedy_probabilities(self, p: dict) -> Array:
        """float[L, K]: each decision's distribution along the most likely prefix."""
        h = c = jnp.zeros((1, self.hidden), p["w"].dtype)
        token = jnp.full((1,), max(self.num_choices), jnp.int32)
        out = []
        for l in range(len(self.num_choices)):
            h, c = self._cell(p, h, c, token)
            logp = self._step_logp(p, h, l)
            out.append(jnp.exp(logp[0]))
            token = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        return jnp.stack(out)

    def policy_gradient(self, p: dict, archs: Array, advantages: Array,
                        weights: Array, entropy_weight: float = 0.0) -> dict:
        """Ascent direction, as `policy_gradient` for the factorised policy."""
        def objective(q):
            return (jnp.sum(jax.lax.stop_gradient(weights * advantages)
                            * self.log_prob(q, archs))
                    + entropy_weight * self.entropy(q, archs))

        return jax.grad(objective)(p)


class ReinforceState(struct.PyTreeNode):
    """Controller logits, optimizer state, baseline and best-so-far."""

    logits: Any            # policy parameters: float32[L, K] logits of the
    #                        factorised policy, or the LSTMController's dict
    opt_state: Any
    baseline: Array        # float32[]: moving average of the batch-mean reward
    has_baseline: Array    # bool[]: False until the first finite batch
    step: Array            # int32[]: tells so far
    num_evals: Array       # int32[]
    best_arch: Array       # int32[L]
    best_fitness: Array    # float32[] (-inf when none is finite)
    best_index: Array      # int32[] (-1 before any tell)
    num_choices: tuple[int, ...] = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)
    entropy_weight: float = struct.field(pytree_node=False)
    baseline_decay: float = struct.field(pytree_node=False)
    optimizer: Any = struct.field(pytree_node=False)
    controller: Optional[LSTMController] = struct.field(pytree_node=False,
                                                        default=None)

    def probabilities(self) -> Array:
        """float32[L, K]: the factorised policy (0 outside each layer's choices), or
        the LSTM's per-decision distributions along its most likely prefix."""
        if self.controller is not None:
            return self.controller.greedy_probabilities(self.logits)
        return jnp.exp(log_policy(self.logits, self.num_choices))


def init(key: Array, num_choices: Sequence[int], *, batch_size: int,
         learning_rate: float = 0.05, entropy_weight: float = 1e-3,
         baseline_decay: float = 0.9, optimizer: Optional[Any] = None,
         init_scale: float = 0.0,
         controller: Optional[LSTMController] = None) -> ReinforceState:
    """A uniform policy (logits ``init_scale * N(0, 1)``, 0: exactly uniform; or the
    ``controller``'s initial LSTM, also uniform) and Adam at ``learning_rate`` unless
    ``optimizer`` (an optax transformation) is given."""
    counts = _as_num_choices(num_choices)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= baseline_decay < 1.0:
        raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
    if entropy_weight < 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
    tx = optax.adam(learning_rate) if optimizer is None else optimizer
    if controller is not None:
        if tuple(controller.num_choices) != counts:
            raise ValueError(f"the controller has num_choices "
                             f"{controller.num_choices}, expected {counts}")
        logits = controller.init(key)
    else:
        logits = init_scale * jax.random.normal(key, (len(counts), max(counts)))
    dtype = jax.tree.leaves(logits)[0].dtype
    return ReinforceState(
        logits=logits, opt_state=tx.init(logits),
        baseline=jnp.zeros((), dtype),  # rewards are handled in this dtype
        has_baseline=jnp.array(False), step=jnp.int32(0), num_evals=jnp.int32(0),
        best_arch=jnp.zeros(len(counts), jnp.int32),
        best_fitness=jnp.float32(-jnp.inf), best_index=jnp.int32(-1),
        num_choices=counts, batch_size=int(batch_size),
        entropy_weight=float(entropy_weight), baseline_decay=float(baseline_decay),
        optimizer=tx, controller=controller)


def ask(key: Array, state: ReinforceState) -> tuple[Array, ReinforceState]:
    """``batch_size`` architectures int32[B, L] sampled from the policy."""
    if state.controller is not None:
        return state.controller.sample(key, state.logits, state.batch_size), state
    return sample(key, state.logits, state.num_choices, state.batch_size), state


def tell(state: ReinforceState, archs: Array, fitness: Array) -> ReinforceState:
    """One policy update from evaluated architectures (see the module docstring)."""
    r = jnp.asarray(fitness).astype(state.baseline.dtype)
    finite = jnp.isfinite(r)
    count = jnp.sum(finite)
    batch_mean = jnp.sum(jnp.where(finite, r, 0.0)) / jnp.maximum(count, 1)
    baseline = jnp.where(state.has_baseline, state.baseline, batch_mean)
    adv = jnp.where(finite, r - baseline, 0.0)
    weights = finite.astype(r.dtype) / jnp.maximum(count, 1)
    if state.controller is not None:
        grad = state.controller.policy_gradient(state.logits, archs, adv, weights,
                                                state.entropy_weight)
    else:
        grad = policy_gradient(state.logits, state.num_choices, archs, adv, weights,
                               state.entropy_weight)
    updates, opt_state = state.optimizer.update(jax.tree.map(jnp.negative, grad),
                                                state.opt_state, state.logits)
    logits = optax.apply_updates(state.logits, updates)
    d = state.baseline_decay
    new_baseline = jnp.where(state.has_baseline, d * state.baseline + (1 - d)
                             * batch_mean, batch_mean)
    any_finite = count > 0
    clean = jnp.where(finite, r, -jnp.inf)
    top = jnp.argmax(clean)
    better = (clean[top] > state.best_fitness) | (state.best_index < 0)
    return state.replace(
        logits=logits, opt_state=opt_state,
        baseline=jnp.where(any_finite, new_baseline, state.baseline
                           ).astype(state.baseline.dtype),
        has_baseline=state.has_baseline | any_finite,
        step=state.step + 1, num_evals=state.num_evals + archs.shape[0],
        best_arch=jnp.where(better, archs[top].astype(jnp.int32), state.best_arch),
        best_fitness=jnp.where(better, clean[top], state.best_fitness
                               ).astype(state.best_fitness.dtype),
        best_index=jnp.where(better, state.num_evals + top, state.best_index
                             ).astype(jnp.int32))


class ReinforceResult(NamedTuple):
    """Outcome of `reinforce` (the fields of `EvolutionResult` it shares)."""

    best_arch: Array          # int32[L]: best architecture ever evaluated
    best_fitness: Array       # float32[]: its fitness (non-finite counts as -inf)
    history: History          # every evaluation in order (num_steps * batch_size)
    probabilities: Array      # float32[num_steps, L, K]: the policy before each step
    baselines: Array          # float32[num_steps]: the baseline after each step
    state: ReinforceState     # the final state


@functools.partial(jax.jit, static_argnames=(
    "fitness_fn", "num_choices", "batch_size", "num_steps", "learning_rate",
    "entropy_weight", "baseline_decay", "controller"))
def _reinforce(key, fitness_fn, num_choices, batch_size, num_steps, learning_rate,
               entropy_weight, baseline_decay, controller) -> ReinforceResult:
    k_init, k_loop = jax.random.split(key)
    state = init(k_init, num_choices, batch_size=batch_size,
                 learning_rate=learning_rate, entropy_weight=entropy_weight,
                 baseline_decay=baseline_decay, controller=controller)

    def one(state, k):
        probs = state.probabilities()
        archs, state = ask(k, state)
        fitness = jnp.asarray(fitness_fn(archs), jnp.float32)
        if fitness.shape != (batch_size,):
            raise ValueError(f"fitness_fn must map int32[N, L] to float32[N]; got "
                             f"shape {fitness.shape} for N = {batch_size}")
        state = tell(state, archs, fitness)
        return state, (archs, fitness, probs, state.baseline)

    state, (archs, fits, probs, baselines) = jax.lax.scan(
        one, state, jax.random.split(k_loop, num_steps))
    history = History(archs.reshape(num_steps * batch_size, len(num_choices)),
                      fits.reshape(-1))
    return ReinforceResult(state.best_arch, state.best_fitness, history, probs,
                           baselines, state)


def reinforce(fitness_fn: FitnessFn, num_choices: Sequence[int], *, batch_size: int,
              num_steps: int, key: Array, learning_rate: float = 0.05,
              entropy_weight: float = 1e-3, baseline_decay: float = 0.9,
              controller: str = "factorised",
              lstm_hidden: int = 32) -> ReinforceResult:
    """REINFORCE with a factorised categorical controller, jitted end to end.

    Args:
      fitness_fn: pure, jittable int32[N, L] -> float32[N]; higher is better (the
        `regularized_evolution` convention); called once per step on ``batch_size``
        architectures.
      num_choices: per-layer choice counts.
      batch_size: architectures sampled and evaluated per step.
      num_steps: policy updates.
      key: PRNG key; the same key gives the same result.
      learning_rate: Adam's step size on the logits.
      entropy_weight: weight of the policy's entropy in the ascent objective.
      baseline_decay: decay of the reward moving average.
      controller: "factorised" (one logit vector per layer) or "lstm" (the
        autoregressive NAS/ENAS controller, `LSTMController`, ``lstm_hidden`` units).

    Returns:
      `ReinforceResult` (``best_arch``, ``best_fitness``, ``history`` as evolution's,
      plus the policy before each step, the baselines and the final state).
    """
    counts = _as_num_choices(num_choices)
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= baseline_decay < 1.0:
        raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
    if entropy_weight < 0 or learning_rate <= 0:
        raise ValueError(f"need entropy_weight >= 0 and learning_rate > 0, got "
                         f"{entropy_weight} and {learning_rate}")
    if controller not in CONTROLLERS:
        raise ValueError(f"controller={controller!r}: expected one of "
                         f"{', '.join(CONTROLLERS)}")
    if controller == "lstm" and int(lstm_hidden) < 1:
        raise ValueError(f"lstm_hidden must be >= 1, got {lstm_hidden}")
    ctrl = (LSTMController(counts, int(lstm_hidden)) if controller == "lstm"
            else None)
    return _reinforce(key, fitness_fn, counts, int(batch_size), int(num_steps),
                      float(learning_rate), float(entropy_weight),
                      float(baseline_decay), ctrl)
