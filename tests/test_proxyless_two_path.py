"""ProxylessNAS' two sampled paths: the gates (one-hot of the active op; the paper's
estimator over the pair, against its closed form), the sampling law (ordered pairs
without replacement, then the active op by the pair's softmax, against the exact
probabilities), the rescaling after an update (against a transcription of the authors'
loop), the supernets that run only the pair (DARTS loop mixed op, chain) against their
all-ops forms, a strategy step, and the config rules."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import methods, relax
from jaxnas.errors import ConfigError
from jaxnas.strategies import proxyless as px
from test_darts_strategy import TRAIN, VAL, ToySupernet


def _pair_estimator(alphas, pair, dldg):
    """The authors' loop: for i, j in the pair, grad[i] += dL/dg_j q_j (delta_ij - q_i),
    q the softmax of the pair's alphas; 0 for the other ops."""
    q = np.exp(alphas[list(pair)] - np.max(alphas[list(pair)]))
    q /= q.sum()
    grad = np.zeros_like(alphas)
    for a, i in enumerate(pair):
        for b, j in enumerate(pair):
            grad[i] += dldg[j] * q[b] * ((i == j) - q[a])
    return grad


def test_gates_are_the_active_one_hot_with_the_papers_pair_estimator():
    alphas = jnp.asarray([[0.3, -1.0, 0.7, 0.1, 0.0], [1.2, 0.4, -0.3, 0.9, -2.0]])
    c = jnp.asarray([1.0, -2.0, 0.5, 3.0, -0.7])
    draw = jax.jit(relax.two_path_gates)
    # L(g) = sum c_j g_j + sum c_j g_j^2: dL/dg_j = c_j (1 + 2 g_j) at every j
    grad_of = jax.jit(jax.grad(
        lambda a, k: jnp.sum(c * (relax.two_path_gates(k, a)[0]
                                  + relax.two_path_gates(k, a)[0] ** 2))))
    for seed in range(6):
        key = jax.random.key(seed)
        gates, pair = (np.asarray(v) for v in draw(key, alphas))
        grad = np.asarray(grad_of(alphas, key))
        for r in range(2):
            assert pair[r, 0] != pair[r, 1]
            assert gates[r].sum() == 1 and set(np.flatnonzero(gates[r])) <= set(pair[r])
            dldg = np.asarray(c) * (1 + 2 * gates[r])
            want = _pair_estimator(np.asarray(alphas[r]), pair[r], dldg)
            np.testing.assert_allclose(grad[r], want, rtol=1e-5, atol=1e-7)
            outside = np.setdiff1d(np.arange(5), pair[r])
            assert np.all(grad[r, outside] == 0)


def test_pairs_and_active_ops_follow_the_exact_sampling_law():
    alphas = jnp.asarray([0.5, -0.4, 1.0, 0.0])
    p = np.asarray(jax.nn.softmax(alphas))
    n = 40000
    gates, pairs = jax.jit(jax.vmap(relax.two_path_gates, in_axes=(0, None)))(
        jax.random.split(jax.random.key(0), n), alphas)
    pairs, active = np.asarray(pairs), np.asarray(gates).argmax(-1)
    for a, b in itertools.permutations(range(4), 2):
        # draw a, then b from the rest: torch.multinomial(p, 2, replacement=False)
        prob = p[a] * p[b] / (1 - p[a])
        hits = np.all(pairs == (a, b), axis=1)
        freq = hits.mean()
        assert abs(freq - prob) < 4.5 * np.sqrt(prob * (1 - prob) / n), (a, b)
        # the active op of the pair: a with probability p_a / (p_a + p_b)
        q = p[a] / (p[a] + p[b])
        m = hits.sum()
        got = (active[hits] == a).mean()
        assert abs(got - q) < 4.5 * np.sqrt(q * (1 - q) / m) + 1e-9, (a, b)


def test_rescaling_keeps_the_pairs_logsumexp_and_leaves_the_others():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(3, 6)).astype(np.float32)
    new = old + rng.normal(size=(3, 6)).astype(np.float32)
    pair = np.asarray([[1, 4], [0, 5], [3, 2]], np.int32)
    got = np.asarray(relax.rescale_pair(jnp.asarray(pair), jnp.asarray(old),
                                        jnp.asarray(new)))
    want = new.astype(np.float64).copy()
    for r in range(3):  # the authors' rescale_updated_arch_param, row by row
        involved = list(pair[r])
        offset = (np.log(np.exp(new[r, involved].astype(np.float64)).sum())
                  - np.log(np.exp(old[r, involved].astype(np.float64)).sum()))
        want[r, involved] -= offset
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _darts_inputs():
    from jaxnas.spaces import cells
    e = cells.num_edges(2)
    kw = dict(channels=4, num_classes=3, layers=3, steps=2, multiplier=2, mixed_op="loop")
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    labels = jnp.asarray([0, 2])
    alphas = {c: jax.random.normal(jax.random.key(i + 5), (e, 8))
              for i, c in enumerate(("normal", "reduce"))}
    gates = relax.two_path_relaxation().weights(jax.random.key(7), alphas, 0)
    pairs = gates.pop("paths")
    return kw, x, labels, gates, pairs


def test_darts_loop_supernet_runs_the_pair_as_the_all_ops_one():
    from jaxnas.supernet.darts import DartsSupernet

    kw, x, labels, gates, pairs = _darts_inputs()
    model = DartsSupernet(**kw)
    variables = model.init(jax.random.key(1), x, gates)

    def loss(g, arch_paths):
        arch = dict(g) if arch_paths is None else {**g, "paths": arch_paths}
        logits, new = model.apply(variables, x, arch, train=True, mutable=["batch_stats"])
        onehot = jax.nn.one_hot(labels, 3)
        return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1)), new

    g_plain = {c: jax.lax.stop_gradient(v) for c, v in gates.items()}  # plain one-hots
    (l_all, st_all), d_all = jax.jit(jax.value_and_grad(
        lambda g: loss(g, None), has_aux=True))(g_plain)
    (l_two, st_two), d_two = jax.jit(jax.value_and_grad(
        lambda g: loss(g, pairs), has_aux=True))(g_plain)
    np.testing.assert_allclose(l_two, l_all, rtol=1e-5)
    for c in ("normal", "reduce"):
        d_a, d_t, pr = (np.asarray(v[c]) for v in (d_all, d_two, pairs))
        for e in range(pr.shape[0]):
            # dL/dg_j = <dL/dy, op_j(x)> for both ops of the pair, 0 for the others
            np.testing.assert_allclose(d_t[e, pr[e]], d_a[e, pr[e]], rtol=2e-4, atol=1e-6)
            assert np.all(np.delete(d_t[e], pr[e]) == 0)
    # only the pair's ops update their BatchNorm statistics (cell 0 is normal)
    before = variables["batch_stats"]["cell_0"]
    after = st_two["batch_stats"]["cell_0"]
    from jaxnas.spaces import cells
    from jaxnas.spaces.ops import PRIMITIVES
    for (src, node) in [(0, 0), (1, 1)]:
        e = cells.edge_index(src, node)
        chosen = {PRIMITIVES[k] for k in np.asarray(pairs["normal"][e])}
        for name, stats in before[f"edge_{e}"].items():
            moved = any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(
                jax.tree.leaves(stats), jax.tree.leaves(after[f"edge_{e}"][name])))
            assert moved == (name.removesuffix("_bn") in chosen), (e, name)


def test_chain_supernet_runs_the_pair_as_the_all_blocks_one():
    from jaxnas.spaces import chain as space_lib
    from jaxnas.supernet.chain_mixed import ChainMixedSupernet

    space = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                                 strides=(1, 2), head_channels=8, in_channels=1)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    labels = jnp.asarray([0, 1, 2, 1])
    model = ChainMixedSupernet(space, 3)
    alphas = jax.random.normal(jax.random.key(3), (2, 6))
    w = relax.two_path_relaxation().weights(jax.random.key(4), alphas, 0)
    assert set(w) == {"weights", "paths"}
    gates, pairs = jax.lax.stop_gradient(w["weights"]), w["paths"]
    variables = model.init(jax.random.key(1), x, gates)

    def loss(g, arch):
        logits, new = model.apply(variables, x, arch(g), train=True,
                                  mutable=["batch_stats"])
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), new

    (l_all, st_all), d_all = jax.jit(jax.value_and_grad(
        lambda g: loss(g, lambda g: g), has_aux=True))(gates)
    (l_two, st_two), d_two = jax.jit(jax.value_and_grad(
        lambda g: loss(g, lambda g: {"weights": g, "paths": pairs}), has_aux=True))(gates)
    np.testing.assert_allclose(l_two, l_all, rtol=1e-5)
    d_all, d_two, pr = np.asarray(d_all), np.asarray(d_two), np.asarray(pairs)
    for l in range(2):
        np.testing.assert_allclose(d_two[l, pr[l]], d_all[l, pr[l]], rtol=2e-4, atol=1e-6)
        assert np.all(np.delete(d_two[l], pr[l]) == 0)
        # the pair's statistics as the all-blocks step moved them; the others unchanged
        for name, old in variables["batch_stats"][f"layer{l}"].items():
            new_two = np.asarray(st_two["batch_stats"][f"layer{l}"][name])
            new_all = np.asarray(st_all["batch_stats"][f"layer{l}"][name])
            np.testing.assert_allclose(new_two[pr[l]], new_all[pr[l]], rtol=1e-5,
                                       atol=1e-6)
            others = np.delete(np.arange(6), pr[l])
            np.testing.assert_array_equal(new_two[others], np.asarray(old)[others])


def test_a_two_path_step_moves_only_the_pair_and_keeps_its_logsumexp():
    # SGD on the alphas, no cost term: the loss gives the unsampled ops no gradient and
    # the rescaling keeps each pair's total probability mass
    strat = px.proxyless(ToySupernet(), w_schedule=0.05, a_tx=optax.sgd(5.0), paths="two")
    state = strat.init(jax.random.key(0), TRAIN["image"])
    new, metrics = jax.jit(strat.step)(state, TRAIN, VAL)
    assert float(metrics["hypergrad_norm"]) > 0
    pairs = relax.two_path_relaxation().weights(
        jax.random.split(state.key)[1], state.alphas, 0)["paths"]
    for c in ("normal", "reduce"):
        old, upd, pr = (np.asarray(v[c]) for v in (state.alphas, new.alphas, pairs))
        for e in range(old.shape[0]):
            rest = np.delete(np.arange(8), pr[e])
            np.testing.assert_array_equal(upd[e, rest], old[e, rest])
            np.testing.assert_allclose(np.logaddexp(*upd[e, pr[e]]),
                                       np.logaddexp(*old[e, pr[e]]), rtol=1e-5, atol=1e-6)
        assert np.any(upd != old)
    with pytest.raises(ValueError, match="paths='one'"):
        px.proxyless(ToySupernet(), paths="one")


def test_config_rules_of_the_two_paths():
    from experiments import darts_chain_digits, proxyless_digits
    config = proxyless_digits.get_config()
    config.proxyless.paths = "three"
    with pytest.raises(ConfigError, match=r"proxyless.paths='three'.*'all', 'two'"):
        methods.validate(config)
    config.proxyless.paths = "two"
    config.model.mixed_op = "fused"
    with pytest.raises(ConfigError, match=r"mixed_op='fused' .*paths='two'.*'loop'"):
        methods.validate(config)
    config.model.mixed_op = "loop"
    methods.validate(config)
    chain = darts_chain_digits.get_config()
    chain.method = "proxyless"
    chain.proxyless = proxyless_digits.get_config().proxyless
    chain.proxyless.cost, chain.proxyless.paths = "none", "two"
    methods.validate(chain)
    from experiments import nb201_darts_digits
    nb = nb201_darts_digits.get_config()
    nb.method = "proxyless"
    nb.proxyless = chain.proxyless
    with pytest.raises(ConfigError, match=r"paths='two' .*model.space='nb201'"):
        methods.validate(nb)


def test_chain_search_with_two_paths_resumes_bitwise(tmp_path, digits_data_dir):
    """`jaxnas search` of experiments/proxyless_chain_digits.py on a tiny chain: a run of
    4 steps, then its last checkpoint and results deleted and the run resumed from step
    2: bitwise the same alphas and path (the pairs are drawn from the checkpointed
    key); the derived path is a valid one and the method is recorded."""
    import json
    import os
    import shutil

    from jaxnas import config as config_lib
    from jaxnas import search

    cfg = config_lib.load_config(os.path.join(os.path.dirname(__file__), "..",
                                              "experiments", "proxyless_chain_digits.py"))
    config_lib.apply_overrides(cfg, [
        "model.stem_channels=4", "model.widths=(4,6)", "model.depths=(1,1)",
        "model.strides=(1,2)", "model.head_channels=8", "darts.warmup_epochs=0",
        "num_steps=4", "checkpoint_every=2", "data.batch_size=16",
        f"data.data_dir={digits_data_dir}"])
    first = search.run(cfg, str(tmp_path))
    assert first["method"] == "proxyless" and first["steps"] == 4
    path = first["genotype"]["path"]
    assert len(path) == 2 and all(0 <= c < 6 for c in path)
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    (tmp_path / "genotype.json").unlink()
    again = search.run(cfg, str(tmp_path))
    assert again["arch"] == first["arch"] and again["genotype"] == first["genotype"]
    assert json.loads((tmp_path / "genotype.json").read_text())["arch"] == first["arch"]
