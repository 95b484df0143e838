"""Chain supernet (SPOS / FairNAS): stacked choice blocks, the path is an input.

`ChainSupernet` is the weight-sharing network of a `jaxnas.spaces.chain.ChainSpace`.
``apply(variables, x, path, train)`` takes the path as an input (int32[L] choice
indices, or a one-hot float[L, K] that is reduced by argmax), so one compiled
function serves every path, and `apply_paths` runs a leading batch of paths under
`jax.vmap`.  `extract_path_variables` copies a path's inherited weights out of the
supernet into the discrete single-path network (`jaxnas.networks.chain.ChainNet`).

How "one of 6 blocks" runs (``dispatch``):

* ``"gather"`` (default): the six candidates of a layer keep *one* stacked parameter
  set with a leading choice axis, padded to the largest candidate: depthwise kernels
  are 7x7 (a 3x3 or 5x5 kernel sits zero-padded in the centre, the taps outside it
  masked), hidden widths are ``6 * c_in`` (an expansion-3 block uses the first
  ``3 * c_in`` hidden channels, the rest masked to zero after each BatchNorm).  All
  choices then share one shape, so a layer gathers ``params[choice]`` by a dynamic
  index and computes exactly one block.  Under `vmap` over paths (FairNAS' m paths,
  an evolution population) the gather simply becomes a batched gather: every path
  still computes one block, so the cost is m blocks, not 6m.  The price is that
  every block runs at the size of the largest (7x7, expansion 6).  Masking rather
  than two stacks (one per expansion) keeps a single dynamic gather per layer: two
  stacks would need a branch, and a branch under `vmap` computes both sides.
* ``"switch"``: `jax.lax.switch` over the six choices, each branch slicing its real
  kernel and hidden width out of the same padded parameters *statically*, so a
  single path computes its block at its true size.  Under `vmap` a switch turns
  into a select that computes all six branches, so it is for single paths only.
  Measured on the digits space (2 shared CPU cores, batch 64, one SPOS step): gather
  43 ms a step and 12 s to compile, switch 106 ms and 44 s (six branches compiled
  per layer, and the backward pass of a switch materialises zero gradients for every
  operand): gather is the default everywhere.

Kernels, BatchNorm and the stem and head shared with the discrete network live in
`jaxnas.supernet.chain_kernels` (on the CPU the padding of a kernel is free for small
feature maps there); the discrete network in `jaxnas.networks.chain`.

Both dispatches compute the same function with the same parameters (tested), and
gradients reach only the chosen block's parameters (and in it only the unpadded
entries): unchosen choices get exactly zero gradient.

BatchNorm: every choice has its own BatchNorm parameters and running statistics
(stacked with the other parameters), updated only when that choice runs.  A block's
statistics still depend on the blocks before it in whichever paths trained it, so
supernet-based fitness recalibrates them per path (`jaxnas.strategies.oneshot`).
Running statistics use momentum ``bn_momentum`` (flax convention: ``new = m * old +
(1 - m) * batch``, biased variance); ``bn_momentum=0`` stores the batch statistics,
which is what recalibration uses.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# the one init_key (jaxnas.optim), re-exported for benchmarks/evolution.py
from jaxnas.optim import init_key  # noqa: F401
from jaxnas.spaces import chain as space_lib
from jaxnas.spaces.chain import CHOICES, MAX_EXPANSION, MAX_KERNEL
from jaxnas.supernet.chain_kernels import (IMPLS, Head, Stem, as_indices,  # noqa: F401
                                           bn_variables, check_input,
                                           inverted_residual)
from jaxnas.types import Array, PyTree

DISPATCHES = ("gather", "switch")
NUM_CANDIDATES = len(CHOICES)  # the stacked choice axis of every layer

# ----------------------------------------------------------------------------------
# Parameter layout of a layer's six stacked choices.


def _hidden(spec: space_lib.LayerSpec) -> int:
    return MAX_EXPANSION * spec.in_channels


def _tap_offsets(k: int) -> np.ndarray:
    """Positions in the row-major 7x7 tap list of a centred k x k kernel's taps."""
    off = (MAX_KERNEL - k) // 2
    return np.array([(off + dy) * MAX_KERNEL + off + dx for dy in range(k)
                     for dx in range(k)], np.int32)


def masks(spec: space_lib.LayerSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(hidden_mask float32[K, 6 c_in], tap_mask float32[K, 49])`` of a layer."""
    hidden = np.zeros((NUM_CANDIDATES, _hidden(spec)), np.float32)
    taps = np.zeros((NUM_CANDIDATES, MAX_KERNEL ** 2), np.float32)
    for i, c in enumerate(CHOICES):
        hidden[i, :c.expansion * spec.in_channels] = 1.0
        taps[i, _tap_offsets(c.kernel)] = 1.0
    return hidden, taps


def slice_choice(tree: dict, spec: space_lib.LayerSpec, choice: int) -> dict:
    """A choice's unpadded parameters or statistics out of a layer's stacked ones."""
    c = CHOICES[choice]
    h = c.expansion * spec.in_channels
    out = {}
    for name, value in tree.items():
        v = value[choice]
        if name == "dw":
            v = v[_tap_offsets(c.kernel), :h]
        elif name == "expand":
            v = v[:, :h]
        elif name == "project":
            v = v[:h]
        elif name.startswith(("bn1", "bn2")):
            v = v[:h]
        out[name] = v
    return out

def _stacked_init(kind: str, spec: space_lib.LayerSpec):
    """Initializer of a stacked weight: He-normal per choice with its real fan-in,
    zero in the padding (which never receives a gradient, so stays zero)."""
    hidden_mask, tap_mask = masks(spec)
    hidden = np.array([c.expansion * spec.in_channels for c in CHOICES], np.float64)
    fan_in = {"expand": np.full(NUM_CANDIDATES, spec.in_channels, np.float64),
              "dw": np.array([c.kernel ** 2 for c in CHOICES], np.float64),
              "project": hidden}[kind]
    if kind == "expand":
        mask = hidden_mask[:, None, :]
    elif kind == "dw":
        mask = tap_mask[:, :, None] * hidden_mask[:, None, :]
    else:
        mask = hidden_mask[:, :, None]
    scale = (np.sqrt(2.0 / fan_in)[:, None, None] * mask).astype(np.float32)

    def init(key: Array, shape: Sequence[int]) -> Array:
        return jax.random.normal(key, shape, jnp.float32) * scale

    return init

def stacked_variables(module: nn.Module, spec: space_lib.LayerSpec) -> tuple[dict, dict]:
    """A layer's six stacked candidates' parameters and running-statistics variables,
    created in ``module`` (inside its compact ``__call__``; also the mixed layers of
    `jaxnas.supernet.chain_mixed`, so both share one parameter layout)."""
    k, h, c_out = NUM_CANDIDATES, _hidden(spec), spec.out_channels
    p = {
        "expand": module.param("expand", _stacked_init("expand", spec),
                               (k, spec.in_channels, h)),
        "dw": module.param("dw", _stacked_init("dw", spec), (k, MAX_KERNEL ** 2, h)),
        "project": module.param("project", _stacked_init("project", spec),
                                (k, h, c_out)),
    }
    bn, stat_vars = bn_variables(module, spec, {"bn1": h, "bn2": h, "bn3": c_out}, (k,))
    p.update(bn)
    return p, stat_vars


class ChoiceLayer(nn.Module):
    """One searchable layer: six stacked inverted-residual candidates."""

    spec: space_lib.LayerSpec
    dispatch: str = "gather"
    impl: str = "auto"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, choice: Array, train: bool) -> Array:
        spec, k = self.spec, NUM_CANDIDATES
        c_out = spec.out_channels
        p, stat_vars = stacked_variables(self, spec)
        stats = {n: v.value for n, v in stat_vars.items()}
        common = dict(stride=spec.stride, residual=spec.residual, train=train,
                      momentum=self.bn_momentum, impl=self.impl)
        if self.dispatch == "gather":
            hidden_mask, tap_mask = masks(spec)
            hidden_mask = jnp.asarray(hidden_mask)[choice]
            chosen_stats = jax.tree.map(lambda a: a[choice], stats)
            y, new = inverted_residual(
                x, jax.tree.map(lambda a: a[choice], p), chosen_stats,
                kernel=MAX_KERNEL, hidden_mask=hidden_mask,
                tap_mask=jnp.asarray(tap_mask)[choice], **common)
            # padded hidden channels keep their (unused) statistics
            new = {n: (jnp.where(hidden_mask > 0, v, chosen_stats[n])
                       if n.startswith(("bn1", "bn2")) else v) for n, v in new.items()}
            new_stats = {n: stats[n].at[choice].set(new[n]) for n in stats}
        elif self.dispatch == "switch":
            def branch(i: int):
                def run(x: Array, p: dict, stats: dict) -> tuple[Array, dict]:
                    y, new = inverted_residual(
                        x, slice_choice(p, spec, i), slice_choice(stats, spec, i),
                        kernel=CHOICES[i].kernel, **common)
                    width = CHOICES[i].expansion * spec.in_channels
                    out = {}
                    for n, v in stats.items():
                        cols = width if n.startswith(("bn1", "bn2")) else c_out
                        out[n] = v.at[i, :cols].set(new[n])
                    return y, out
                return run

            y, new_stats = jax.lax.switch(choice, [branch(i) for i in range(k)], x, p,
                                          stats)
        else:
            raise ValueError(f"dispatch={self.dispatch!r}: expected one of "
                             f"{', '.join(DISPATCHES)}")
        if train and not self.is_initializing():
            for n, var in stat_vars.items():
                var.value = new_stats[n]
        return y

class ChainSupernet(nn.Module):
    """The weight-sharing supernet of a chain space; the path is an input.

    ``apply(variables, x, path, train=True)``; ``path`` is int32[L] or one-hot
    float[L, K].  Parameters of layer ``l`` live under ``layer{l}`` with a leading
    choice axis of size K (see the module docstring for the padded layout).
    """

    space: space_lib.ChainSpace
    num_classes: int
    dispatch: str = "gather"
    impl: str = "auto"
    bn_momentum: float = 0.9

    @property
    def num_layers(self) -> int:
        return self.space.num_layers

    @property
    def num_choices(self) -> int:
        return NUM_CANDIDATES

    @nn.compact
    def __call__(self, x: Array, path: Array, train: bool = True) -> Array:
        check_input(self.space, x)
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"dispatch={self.dispatch!r}: expected one of "
                             f"{', '.join(DISPATCHES)}")
        path = as_indices(path)
        if path.shape != (self.space.num_layers,):
            raise ValueError(f"path has shape {path.shape}, expected "
                             f"({self.space.num_layers},) for this space")
        x = Stem(self.space, self.bn_momentum, name="stem")(x, train)
        for l, spec in enumerate(self.space.layers()):
            x = ChoiceLayer(spec, self.dispatch, self.impl, self.bn_momentum,
                            name=f"layer{l}")(x, path[l], train)
        return Head(self.space, self.num_classes, self.bn_momentum, name="head")(
            x, train)

def extract_path_variables(space: space_lib.ChainSpace, variables: PyTree,
                           path: Sequence[int]) -> dict[str, Any]:
    """The `ChainNet` variables of ``path`` inherited from supernet ``variables``."""
    path = space_lib.check_path(space, path)
    out = {}
    for collection, tree in variables.items():
        tree = dict(tree)
        for l, (spec, choice) in enumerate(zip(space.layers(), path)):
            tree[f"layer{l}"] = slice_choice(dict(tree[f"layer{l}"]), spec, choice)
        out[collection] = tree
    return out


def apply_paths(model: ChainSupernet, variables: PyTree, x: Array, paths: Array,
                train: bool = False) -> Array:
    """Logits float[P, N, classes] of a leading batch of paths, by one `vmap`.

    In training mode the batch statistics are used and the running ones discarded.
    """
    def one(path: Array) -> Array:
        if train:
            return model.apply(variables, x, path, train=True,
                               mutable=["batch_stats"])[0]
        return model.apply(variables, x, path, train=False)

    return jax.vmap(one)(paths)


def merge_path_stats(old: PyTree, per_path: PyTree, paths: Array) -> PyTree:
    """Combines the batch statistics that m paths computed in parallel (FairNAS).

    ``per_path`` has a leading path axis.  For a choice layer ``layer{l}`` each
    choice's statistics come from the path that chose it (the mean over the paths
    that chose it, if several did), and stay ``old`` if none did; for the shared
    stem and head BatchNorms the paths' statistics are averaged.
    """
    paths = jnp.asarray(paths)
    out = {}
    for name, sub in old.items():
        if name.startswith("layer"):
            l = int(name[len("layer"):])
            hits = jax.nn.one_hot(paths[:, l], NUM_CANDIDATES,
                                  dtype=jnp.float32)  # [m, K]
            count = hits.sum(0)

            def pick(o: Array, p: Array) -> Array:
                w = hits.reshape(hits.shape + (1,) * (o.ndim - 1))
                total = jnp.sum(w * p, axis=0)
                c = count.reshape((-1,) + (1,) * (o.ndim - 1))
                return jnp.where(c > 0, total / jnp.maximum(c, 1.0), o)

            out[name] = jax.tree.map(pick, sub, per_path[name])
        else:
            out[name] = jax.tree.map(lambda p: jnp.mean(p, axis=0), per_path[name])
    return out
