"""Zero-cost proxies: scores of an untrained network that rank architectures.

Contract (``apply_fn(params, x) -> outputs``, ``loss_fn(params, batch) -> scalar``)::

    synflow(apply_fn, params, sample_input)  # sum |theta * dR/dtheta|, R = sum of the
                                             # outputs for |theta| and an all-ones input
    snip(loss_fn, params, batch)             # sum |theta * dL/dtheta|
    grad_norm(loss_fn, params, batch)        # global L2 norm of dL/dtheta

and, from the same papers (Abdelfattah et al. 2021, "Zero-Cost Proxies for
Lightweight NAS"; Mellor et al. 2021, "Neural Architecture Search without Training"):

    naswot(activations_fn, params, inputs)   # log|K_H| of the ReLU binary-code kernel
    jacov(apply_fn, params, inputs)          # input-Jacobian correlation score
    fisher(tapped_loss_fn, params, batch)    # sum_layers sum_channels
                                             #   mean_n (sum_pos act * dL/dact)^2 / 2

Every function is pure and jittable, so a population is one ``jax.vmap`` over
stacked parameters (`population`) or, for the chain space, over paths of the
weight-sharing supernet (`chain_fitness`: the path is an input, so one compiled
program scores every architecture).

Precision: synflow multiplies |theta| through the whole depth, so R grows like the
product of the layers' weight norms and overflows float32 in deep nets; the reference
code of Abdelfattah et al. computes it in double precision (``net.double()``) and with
BatchNorm removed.  Here synflow runs in the dtype of ``params`` (cast the parameters
to float64 under ``jax_enable_x64`` for deep networks); the chain helpers run it in
inference mode, where a freshly initialised BatchNorm (mean 0, variance 1) is an
affine map, close to the reference's BatchNorm-free network.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.errors import ConfigError
from jaxnas.types import Array, PyTree

PROXIES = ("synflow", "snip", "grad_norm", "naswot", "jacov", "fisher")
JACOV_K = 1e-5  # Mellor et al. (v1): the eigenvalue offset of the jacov score


def _tree_sum(tree: PyTree) -> Array:
    leaves = jax.tree.leaves(tree)
    return sum(jnp.sum(x) for x in leaves)


def synflow(apply_fn: Callable[[PyTree, Array], Array], params: PyTree,
            sample_input: Array) -> Array:
    """Synaptic flow (Tanaka et al. 2020): ``sum |theta * dR/dtheta|`` at ``|theta|``,
    ``R = sum(apply_fn(|theta|, ones))`` with an all-ones input of ``sample_input``'s
    shape, in the parameters' dtype (the input is cast to it)."""
    abs_params = jax.tree.map(jnp.abs, params)
    leaves = jax.tree.leaves(params)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    ones = jnp.ones(jnp.shape(sample_input), dtype)
    grads = jax.grad(lambda p: jnp.sum(apply_fn(p, ones)))(abs_params)
    return _tree_sum(jax.tree.map(lambda p, g: jnp.abs(p * g), abs_params, grads))


def snip(loss_fn: Callable[[PyTree, Any], Array], params: PyTree, batch: Any) -> Array:
    """SNIP connection sensitivity (Lee et al. 2019): ``sum |theta * dL/dtheta|``."""
    grads = jax.grad(loss_fn)(params, batch)
    return _tree_sum(jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads))


def grad_norm(loss_fn: Callable[[PyTree, Any], Array], params: PyTree,
              batch: Any) -> Array:
    """Global L2 norm of ``dL/dtheta`` over every parameter."""
    grads = jax.grad(loss_fn)(params, batch)
    return jnp.sqrt(_tree_sum(jax.tree.map(lambda g: jnp.sum(jnp.square(g)), grads)))


def naswot_kernel(activations: Sequence[Any]) -> Array:
    """``K_H[i, j] = N_A - hamming(c_i, c_j)`` of the binary codes ``c = (a > 0)``.

    ``activations``: arrays [N, ...] of pre-activations (the inputs of the ReLUs),
    or ``(array, mask)`` pairs whose ``mask`` (broadcast to ``array[0]``) is 1 for
    the units that count and 0 for units to leave out (padding).
    """
    kernel = None
    for item in activations:
        a, mask = item if isinstance(item, tuple) else (item, None)
        n = a.shape[0]
        c = (a > 0).astype(jnp.float32).reshape(n, -1)
        m = (jnp.ones(c.shape[1:], jnp.float32) if mask is None else
             jnp.broadcast_to(jnp.asarray(mask, jnp.float32), a.shape[1:]).reshape(-1))
        # agreements: both active or both inactive, over the counted units
        k = (c * m) @ c.T + ((1.0 - c) * m) @ (1.0 - c).T
        kernel = k if kernel is None else kernel + k
    if kernel is None:
        raise ValueError("naswot: activations_fn returned no activations")
    return kernel


def naswot(activations_fn: Callable[[PyTree, Array], Sequence[Any]], params: PyTree,
           inputs: Array) -> Array:
    """NASWOT (Mellor et al. 2021): ``log|K_H|`` of the binary activation-code kernel.

    ``activations_fn(params, inputs)`` returns the pre-activations of the network's
    ReLUs as arrays [N, ...] (or ``(array, mask)`` pairs, see `naswot_kernel`) for a
    batch of ``N >= 2`` inputs (a single input has a 1x1 kernel: no ranking).
    Returns the log of the absolute determinant (-inf when K_H is singular).
    """
    check_batch("naswot", np.shape(inputs)[0])
    kernel = naswot_kernel(activations_fn(params, inputs))
    return jnp.linalg.slogdet(kernel)[1]


def jacov(apply_fn: Callable[[PyTree, Array], Array], params: PyTree,
          inputs: Array) -> Array:
    """Jacobian covariance (Mellor et al. 2020, v1; as in Abdelfattah et al.).

    ``J_i = d sum(apply_fn(params, inputs)) / d inputs_i`` flattened per example, ``C``
    their correlation matrix, ``score = -sum_v (log(v + k) + 1 / (v + k))`` over the
    eigenvalues ``v`` of ``C``, ``k = 1e-5``. Needs ``N >= 2`` inputs.
    """
    check_batch("jacov", np.shape(inputs)[0])
    jac = jax.grad(lambda x: jnp.sum(apply_fn(params, x)))(inputs)
    jac = jac.reshape(jac.shape[0], -1)
    centred = jac - jac.mean(axis=1, keepdims=True)
    cov = centred @ centred.T
    d = jnp.sqrt(jnp.diag(cov))
    corr = cov / (d[:, None] * d[None, :])
    v = jnp.linalg.eigvalsh(corr)
    return -jnp.sum(jnp.log(v + JACOV_K) + 1.0 / (v + JACOV_K))


def fisher(loss_fn: Callable[[PyTree, Any, Callable[[Array], Array]], Array],
           params: PyTree, batch: Any) -> Array:
    """Fisher (Turner et al. 2020, as scored by Abdelfattah et al. 2021).

    ``loss_fn(params, batch, tap) -> scalar`` runs the network with the output ``z`` of
    every convolution and dense layer (batch first, channels last) replaced by
    ``tap(z)``.  With ``g[n, c] = sum over positions of z * dL/dz`` for example ``n``
    and channel ``c`` (``dL/dz`` of the batch loss, as the reference's backward hooks
    see it), the score is ``sum_layers sum_c mean_n g[n, c]^2 / 2``.

    ``dL/dz`` comes from a zero perturbation added at every tap (``tap(z) = z + e``,
    ``dL/de = dL/dz``), so the network code needs no hooks and the function stays
    pure: it jits and vmaps over a population like the other proxies.
    """
    shapes: list = []

    def record(z: Array) -> Array:
        shapes.append(jax.ShapeDtypeStruct(z.shape, z.dtype))
        return z

    jax.eval_shape(lambda p, b: loss_fn(p, b, record), params, batch)
    if not shapes:
        raise ValueError("fisher: loss_fn called tap on no layer output")

    def perturbed(eps: list) -> tuple[Array, list]:
        outputs, it = [], iter(eps)

        def tap(z: Array) -> Array:
            outputs.append(z)
            return z + next(it)

        return loss_fn(params, batch, tap), outputs

    zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    grads, outputs = jax.grad(perturbed, has_aux=True)(zeros)
    total = 0.0
    for z, g in zip(outputs, grads):
        g_nc = jnp.sum(z * g, axis=tuple(range(1, z.ndim - 1)))  # over positions
        total = total + jnp.sum(0.5 * jnp.mean(jnp.square(g_nc), axis=0))
    return total


def check_batch(name: str, n: int) -> None:
    """ValueError for a batch too small for ``name`` (before anything compiles)."""
    if name in ("naswot", "jacov") and int(n) < 2:
        raise ValueError(f"{name} needs a batch of at least 2 inputs (it compares "
                         f"inputs with each other), got {int(n)}")


def check_names(names: Sequence[str], key: str = "proxies") -> tuple[str, ...]:
    """The proxy names as a tuple; ConfigError naming an unknown one."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ConfigError(f"config.{key}=() is not allowed: expected one or more of "
                          f"{', '.join(PROXIES)}")
    for n in names:
        if n not in PROXIES:
            raise ConfigError(f"config.{key} has the unknown proxy {n!r}: expected "
                              f"one or more of {', '.join(PROXIES)}")
    return names


def population(score: Callable[[PyTree], Array], stacked_params: PyTree) -> Array:
    """``score`` of every member of a population in one vmapped call: float[P] for
    parameters stacked on a leading axis of size P."""
    return jax.vmap(score)(stacked_params)


# ----------------------------------------------------------------------------------
# The chain space: every path scored through the weight-sharing supernet.


def ones_bn_scales(params: PyTree) -> PyTree:
    """``params`` with every BatchNorm scale set to 1.

    The chain networks initialise the last BatchNorm scale of each residual block to
    0 (so training starts from the identity); proxies scored at that init would see
    no gradient inside any residual branch. The papers score PyTorch networks, whose
    BatchNorm scales start at 1: the chain helpers score that.
    """
    def fix(path, x):
        name = str(getattr(path[-1], "key", path[-1]))
        return jnp.ones_like(x) if name.endswith("scale") else x

    return jax.tree_util.tree_map_with_path(fix, params)


@contextlib.contextmanager
def _wrapping_kernel(name: str, wrap: Callable[[Callable], Callable]):
    """Replaces ``chain_kernels.<name>`` by ``wrap(original)`` while tracing (the
    chain kernels call their ReLU6 and BatchNorm by module-global name, so the
    networks need no hooks; not thread-safe)."""
    from jaxnas.supernet import chain_kernels

    original = getattr(chain_kernels, name)
    setattr(chain_kernels, name, wrap(original))
    try:
        yield
    finally:
        setattr(chain_kernels, name, original)


def _recording_relu6(store: list):
    """Records the input of every ReLU6 of the chain networks while tracing."""
    def wrap(original):
        def relu6(x):
            store.append(x)
            return original(x)
        return relu6

    return _wrapping_kernel("relu6", wrap)


def _tapping_batch_norm(tap: Callable[[Array], Array]):
    """Passes the input of every BatchNorm of the chain networks through ``tap``:
    every convolution there (stem, expand, depthwise, project, head) feeds a
    BatchNorm, so these are the convolution outputs `fisher` taps."""
    def wrap(original):
        def batch_norm(x, *args, **kwargs):
            return original(tap(x), *args, **kwargs)
        return batch_norm

    return _wrapping_kernel("batch_norm", wrap)


def chain_activations(model: Any, variables: Mapping[str, Any], x: Array,
                      path: Array | None = None, *, train: bool = True) -> list:
    """The ReLU6 pre-activations of a chain network (`ChainSupernet` with ``path``,
    or a discrete `ChainNet` with ``path=None``) as ``(array, mask)`` pairs for
    `naswot`: in the supernet the padded hidden channels of a smaller block are
    masked out, so a path scores as its discrete network does."""
    from jaxnas.supernet import chain as supernet_lib

    store: list = []
    with _recording_relu6(store):
        args = (x,) if path is None else (x, path)
        if train:
            model.apply(variables, *args, train=True, mutable=["batch_stats"])
        else:
            model.apply(variables, *args, train=False)
    if path is None:
        return [(a, None) for a in store]
    layers = model.space.layers()
    if len(store) != 2 * len(layers) + 2:  # stem, two per block, head
        raise RuntimeError(f"expected {2 * len(layers) + 2} ReLU6 calls in the chain "
                           f"supernet, recorded {len(store)}")
    path = supernet_lib.as_indices(path)
    out = [(store[0], None)]
    for l, spec in enumerate(layers):
        hidden = jnp.asarray(supernet_lib.masks(spec)[0])[path[l]]
        out += [(store[1 + 2 * l], hidden), (store[2 + 2 * l], hidden)]
    return out + [(store[-1], None)]


def _ce(logits: Array, labels: Array) -> Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def chain_path_score(name: str, model: Any, variables: Mapping[str, Any],
                     images: Array, labels: Array, path: Array | None = None) -> Array:
    """Proxy ``name`` of one chain network: the supernet ``model`` at ``path``, or a
    discrete `ChainNet` with ``path=None``. ``variables`` holds ``params`` and
    ``batch_stats``; BatchNorm scales are set to 1 (`ones_bn_scales`). synflow runs
    in inference mode (running statistics at init), the others in training mode
    (batch statistics), as the reference code does.  fisher taps the input of every
    BatchNorm (each follows a convolution) and the logits; in the supernet the
    padded hidden channels of a smaller block are zero there, so add nothing."""
    stats = variables.get("batch_stats", {})
    params = ones_bn_scales(variables["params"])
    extra = () if path is None else (path,)

    def apply(p, x, train):
        v = {"params": p, "batch_stats": stats}
        if train:
            return model.apply(v, x, *extra, train=True, mutable=["batch_stats"])[0]
        return model.apply(v, x, *extra, train=False)

    if name == "synflow":
        return synflow(lambda p, x: apply(p, x, False), params, images[:1])
    if name in ("snip", "grad_norm"):
        fn = snip if name == "snip" else grad_norm
        return fn(lambda p, b: _ce(apply(p, b[0], True), b[1]), params,
                  (images, labels))
    if name == "naswot":
        return naswot(lambda p, x: chain_activations(
            model, {"params": p, "batch_stats": stats}, x, path), params, images)
    if name == "jacov":
        return jacov(lambda p, x: apply(p, x, True), params, images)
    if name == "fisher":
        def tapped_loss(p, b, tap):
            with _tapping_batch_norm(tap):
                logits = apply(p, b[0], True)
            return _ce(tap(logits), b[1])  # the classifier is the last dense layer

        return fisher(tapped_loss, params, (images, labels))
    raise ConfigError(f"unknown proxy {name!r}: expected one of {', '.join(PROXIES)}")


def chain_fitness(names: Sequence[str], model: Any, variables: Mapping[str, Any],
                  images: Array, labels: Array) -> Callable[[Array], Array]:
    """``fitness_fn(paths int32[P, L]) -> float32[P, len(names)]``: every proxy of a
    population of chain paths by one vmap over the supernet ``model``'s paths.

    Bad names and a batch too small for a proxy are refused here, before anything
    compiles. With a single name, ``fitness_fn(paths)[:, 0]`` is the fitness that
    `jaxnas.strategies.evolution.regularized_evolution` and `reinforce` take.
    """
    names = check_names(names)
    for n in names:
        check_batch(n, np.shape(images)[0])

    def one(path: Array) -> Array:
        return jnp.stack([chain_path_score(n, model, variables, images, labels, path)
                          .astype(jnp.float32) for n in names])

    def fitness_fn(paths: Array) -> Array:
        return jax.vmap(one)(jnp.asarray(paths, jnp.int32))

    return fitness_fn
