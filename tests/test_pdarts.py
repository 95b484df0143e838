"""P-DARTS: per-edge op sets and skip dropout in the supernet, pruning, the max-skips
derivation against an independent switch-based transcription of the authors'
procedure, the dropout schedule, config refusals, and a two-stage search through
`jaxnas.search.run` that resumes exactly across the stage change."""

import copy
import itertools
import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import config as config_lib
from jaxnas import search, spaces
from jaxnas.errors import ConfigError
from jaxnas.spaces import cells, genotypes
from jaxnas.spaces.ops import PRIMITIVES
from jaxnas.strategies import pdarts
from jaxnas.supernet.darts import DartsSupernet, skip_dropout

SKIP = PRIMITIVES.index("skip_connect")


def _random_ops(rng, num_edges, k):
    """Random op sets of k primitives per edge (skip_connect and a pool always in, so
    the identity, the pools' BatchNorm and a conv are all exercised)."""
    def edge():
        others = [p for p in PRIMITIVES if p not in ("skip_connect", "max_pool_3x3")]
        pick = {"skip_connect", "max_pool_3x3", *rng.choice(others, k - 2, replace=False)}
        return tuple(p for p in PRIMITIVES if p in pick)
    return tuple(tuple(edge() for _ in range(num_edges)) for _ in range(2))


def _kept_params(tree, keep):
    """The subtree of a full supernet's variables for a pruned one: an edge module
    `edge_<e>` keeps the submodules of its kept ops (an op's BatchNorm is `<op>_bn`)."""
    def walk(node, edge_ops):
        out = {}
        for name, sub in node.items():
            if name.startswith("edge_") and edge_ops is not None:
                ops = edge_ops[int(name[5:])]
                out[name] = {k: v for k, v in sub.items()
                             if k in ops or k.removesuffix("_bn") in ops}
            elif isinstance(sub, dict):
                out[name] = walk(sub, keep.get(name, edge_ops))
            else:
                out[name] = sub
        return out
    return walk(tree, None)


def test_pruned_supernet_is_the_full_one_with_zero_weights_on_pruned_ops():
    """Independent truth: the full DARTS supernet whose pruned ops have weight 0 (it
    computes them and multiplies by 0). Logits, arch and weight gradients agree."""
    rng = np.random.default_rng(0)
    steps = 2
    e = cells.num_edges(steps)
    ops = _random_ops(rng, e, 4)
    kw = dict(channels=4, num_classes=5, layers=3, steps=steps, multiplier=2,
              mixed_op="loop")
    full, pruned = DartsSupernet(**kw), DartsSupernet(**kw, edge_ops=ops)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    y = jnp.array([0, 3, 4])
    alphas = {c: jax.random.normal(jax.random.key(i + 2), (e, 4)) for i, c in
              enumerate(("normal", "reduce"))}
    variables = full.init(jax.random.key(0), x, pdarts.expand(
        jax.tree.map(lambda a: jax.nn.softmax(a, -1), alphas), ops, PRIMITIVES))
    reductions = cells.reduction_layers(3)
    keep = {f"cell_{i}": ops[int(i in reductions)] for i in range(3)}
    small = _kept_params(variables, keep)
    assert (len(jax.tree.leaves(small["params"]))
            < len(jax.tree.leaves(variables["params"])))

    def loss(model, params, a):
        w = pdarts.expand(jax.tree.map(lambda v: jax.nn.softmax(v, -1), a), ops,
                          PRIMITIVES)
        logits, _ = model.apply({"params": params, "batch_stats": small["batch_stats"]
                                 if model is pruned else variables["batch_stats"]},
                                x, w, train=True, mutable=["batch_stats"])
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), y]), logits

    (l_full, z_full), (gp_full, ga_full) = jax.value_and_grad(
        lambda p, a: loss(full, p, a), argnums=(0, 1), has_aux=True)(
            variables["params"], alphas)
    (l_small, z_small), (gp_small, ga_small) = jax.value_and_grad(
        lambda p, a: loss(pruned, p, a), argnums=(0, 1), has_aux=True)(
            small["params"], alphas)
    np.testing.assert_allclose(z_small, z_full, rtol=1e-5, atol=1e-6)
    for c in ("normal", "reduce"):
        np.testing.assert_allclose(ga_small[c], ga_full[c], rtol=1e-4, atol=1e-7)
    kept_full = _kept_params({"params": gp_full}, keep)["params"]
    for a, b in zip(jax.tree.leaves(gp_small), jax.tree.leaves(kept_full)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_skip_dropout_keeps_scales_and_drops_at_the_rate():
    x = jax.random.normal(jax.random.key(0), (200_000,)) + 3.0
    assert (skip_dropout(x, jax.random.key(1), 0.0) == x).all()  # rate 0: exact
    y = np.asarray(skip_dropout(x, jax.random.key(1), 0.3))
    dropped = y == 0
    assert abs(dropped.mean() - 0.3) < 0.005
    np.testing.assert_allclose(y[~dropped], np.asarray(x)[~dropped] / 0.7, rtol=1e-6)
    z = np.asarray(skip_dropout(x, jax.random.key(2), 0.3))
    assert ((z == 0) != dropped).any()  # another key, another mask


@pytest.mark.parametrize("mixed_op", ["loop", "fused", "edges"])
def test_supernet_skip_dropout_only_touches_the_identity_and_is_exact_at_rate_zero(
        mixed_op):
    steps, e = 1, cells.num_edges(1)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    w = {c: jnp.full((e, len(PRIMITIVES)), 1.0 / len(PRIMITIVES)) for c in
         ("normal", "reduce")}
    model = DartsSupernet(channels=4, num_classes=3, layers=3, steps=steps, multiplier=1,
                          mixed_op=mixed_op)
    variables = model.init(jax.random.key(0), x, w)

    def apply(arch, weights_of=w):
        return model.apply(variables, x, {**weights_of, **arch}, train=True,
                           mutable=["batch_stats"])[0]

    plain = apply({})
    at_zero = apply({"skip_dropout": {"key": jax.random.key(3), "rate": jnp.float32(0)}})
    assert (at_zero == plain).all()
    drop = {"skip_dropout": {"key": jax.random.key(3), "rate": jnp.float32(0.5)}}
    assert not np.allclose(apply(drop), plain)
    # without the identity op (its weight 0) the dropout changes nothing
    no_skip = {c: v.at[:, SKIP].set(0.0) for c, v in w.items()}
    np.testing.assert_array_equal(apply(drop, no_skip), apply({}, no_skip))
    with pytest.raises(ValueError, match="mixed_op='scan'"):
        DartsSupernet(channels=4, num_classes=3, layers=3, steps=1, multiplier=1,
                      mixed_op="scan").init(jax.random.key(0), x, {**w, **drop})


def test_prune_keeps_the_largest_weights_and_drops_the_first_of_ties():
    rng = np.random.default_rng(0)
    ops = pdarts.full_ops(PRIMITIVES, 14)
    w = {c: rng.dirichlet(np.ones(8), 14) for c in ("normal", "reduce")}
    kept = pdarts.prune(w, ops, 5)
    for c, cell in zip(("normal", "reduce"), kept):
        for e, edge in enumerate(cell):
            # brute force: the 5-subset of largest total weight
            best = max(itertools.combinations(range(8), 5),
                       key=lambda s: sum(w[c][e, i] for i in s))
            assert edge == tuple(PRIMITIVES[i] for i in best)
    again = pdarts.prune({c: np.full((14, 5), 0.2) for c in ("normal", "reduce")}, kept, 3)
    assert again[0][0] == kept[0][0][2:]  # ties: the first ones are dropped
    with pytest.raises(ValueError, match="keep=6"):
        pdarts.prune({c: np.full((14, 5), 0.2) for c in ("normal", "reduce")}, kept, 6)


def _authors_final_normal(prob, ops, max_skips):
    """The final normal cell by the authors' switch-based procedure, written here from
    its description: prob[E, 3] softmax over each edge's 3 kept ops (`ops`); `none`'s
    probability zeroed; per node the two edges of largest max prob; per edge its best
    op; then, while more than `max_skips` chosen edges are skip-connects, the chosen
    skip edge of smallest skip prob gets skip prob 0 and edges/ops are chosen again."""
    prob = prob.copy()
    for e, edge in enumerate(ops):
        if "none" in edge:
            prob[e, edge.index("none")] = 0.0

    def choose(prob):
        chosen, start = [], 0
        for node in range(4):
            n = node + 2
            strength = prob[start:start + n].max(axis=1)
            order = sorted(range(n), key=lambda i: strength[i])
            for i in sorted(order[-2:], key=lambda i: -strength[i]):
                chosen.append((ops[start + i][int(np.argmax(prob[start + i]))], i,
                               start + i))
            start += n
        return chosen

    chosen = choose(prob)
    while sum(op == "skip_connect" for op, _, _ in chosen) > max_skips:
        skip_probs = {e: prob[e, ops[e].index("skip_connect")]
                      for op, _, e in chosen if op == "skip_connect"}
        e = min(skip_probs, key=lambda k: (skip_probs[k], k))
        prob[e, ops[e].index("skip_connect")] = 0.0
        chosen = choose(prob)
    return [(op, src) for op, src, _ in chosen]


@pytest.mark.parametrize("seed", range(6))
def test_final_derivation_limits_skips_as_the_authors_procedure(seed):
    rng = np.random.default_rng(seed)
    ops = []
    for _ in range(14):  # 3 ops per edge, skip_connect in most, `none` in some
        pool = [p for p in PRIMITIVES if p != "skip_connect"]
        pick = set(rng.choice(pool, 2 if rng.random() < 0.8 else 3, replace=False))
        if len(pick) == 2:
            pick.add("skip_connect")
        ops.append(tuple(p for p in PRIMITIVES if p in pick))
    ops = (tuple(ops), tuple(ops))
    logits = rng.normal(size=(14, 3))
    for e, edge in enumerate(ops[0]):  # skips strong: the limit has work to do
        if "skip_connect" in edge:
            logits[e, edge.index("skip_connect")] += 1.5
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    weights = pdarts.expand({"normal": prob, "reduce": prob}, ops, PRIMITIVES)
    free, removed_free = pdarts.derive(weights, primitives=PRIMITIVES, steps=4)
    assert removed_free == 0
    assert list(free.normal) == _authors_final_normal(prob, ops[0], 8)
    for max_skips in (2, 1, 0):
        g, removed = pdarts.derive(weights, primitives=PRIMITIVES, steps=4,
                                   max_skips=max_skips)
        assert list(g.normal) == _authors_final_normal(prob, ops[0], max_skips)
        assert sum(op == "skip_connect" for op, _ in g.normal) <= max_skips
        assert g.reduce == free.reduce  # the limit is the normal cell's only
        n_free = sum(op == "skip_connect" for op, _ in free.normal)
        assert removed >= max(0, n_free - max_skips)


def test_dropout_schedule_is_the_authors_per_epoch_rate():
    epochs, warm, per_epoch, rate = 25, 10, 3, 0.4
    schedule = pdarts.dropout_schedule(rate, epochs, warm, per_epoch)
    for step in range(epochs * per_epoch):
        e = step // per_epoch
        want = (rate * (epochs - e - 1) / epochs if e < warm
                else rate * math.exp(-(e - warm) * 0.2))
        assert abs(float(schedule(step)) - want) < 1e-6
    with pytest.raises(ValueError, match="rate=1.0"):
        pdarts.dropout_schedule(1.0, epochs, warm, per_epoch)


def _config(**overrides):
    cfg = config_lib.load_config("experiments/pdarts_digits.py")
    config_lib.apply_overrides(cfg, [f"{k}={v}" for k, v in overrides.items()])
    return cfg


@pytest.mark.parametrize("overrides,message", [
    ({"model.mixed_op": "scan"}, "model.mixed_op='scan' is not allowed for pdarts"),
    ({"pdarts.num_ops": (7, 5, 3)}, "num_ops\\[0\\]=8"),
    ({"pdarts.num_ops": (8, 3, 5)}, "non-increasing"),
    ({"pdarts.num_ops": (8, 5, 1)}, "integers >= 2"),
    ({"pdarts.skip_dropout": (0.0, 0.4)}, "expected 3 values"),
    ({"pdarts.skip_dropout": (0.0, 0.4, 1.0)}, "rates in \\[0, 1\\)"),
    ({"pdarts.add_layers": (1, 3, 6)}, "expected 0 first"),
    ({"pdarts.max_skips": -1}, "pdarts.max_skips"),
])
def test_bad_config_is_refused_naming_key_and_allowed_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        search.validate_config(_config(**overrides))


def _arch(workdir):
    return json.load(open(workdir / "genotype.json"))


def test_two_stage_search_prunes_limits_skips_and_resumes_across_the_stage_change(
        tmp_path, digits_data_dir):
    """A 2-stage search (3 then 4 cells, 8 then 3 ops per edge); then, with pdarts.json
    and stage 2's last checkpoint deleted (a kill after stage 2's step 2, before stage
    1's record was written), a re-run re-derives stage 2's op sets from stage 1 and
    resumes stage 2 at step 2: the results are bitwise those of the first run."""
    cfg = _config(**{"data.data_dir": digits_data_dir, "epochs": 2,
                     "darts.warmup_epochs": 1, "data.batch_size": 256,
                     "model.channels": 4, "model.layers": 3, "model.steps": 1,
                     "model.multiplier": 1, "pdarts.add_layers": (0, 1),
                     "pdarts.num_ops": (8, 3), "pdarts.skip_dropout": (0.0, 0.5),
                     "pdarts.max_skips": 0, "checkpoint_every": 2, "log_every": 1})
    first = search.run(cfg, str(tmp_path / "run"))
    record = json.load(open(tmp_path / "run" / "pdarts.json"))
    s0, s1 = record["stages"]
    assert [len(s["ops"][0][0]) for s in (s0, s1)] == [8, 3]
    assert s1["ops"] == s0["next_ops"] and s1["layers"] == 4 and s0["layers"] == 3
    # stage 2's ops are stage 1's three largest softmax weights of each edge
    a0 = np.asarray(json.load(open(tmp_path / "run" / "stage_0" / "genotype.json"))
                    ["arch"]["normal"], np.float64)
    for e, edge in enumerate(s1["ops"][0]):
        top = sorted(np.argsort(-a0[e])[:3])
        assert edge == [PRIMITIVES[i] for i in top]
    # stage 2's recorded op weights are 0 on its pruned ops
    last = [json.loads(line) for line in open(tmp_path / "run" / "stage_1" /
                                              "metrics.jsonl") if "arch_weights" in line]
    w = np.asarray(last[-1]["arch_weights"]["normal"])
    for e, edge in enumerate(s1["ops"][0]):
        assert all((w[e, i] == 0) == (p not in edge) for i, p in enumerate(PRIMITIVES))
    assert first["complete"] and first["method"] == "pdarts"
    assert first["steps"] == s0["steps"] + s1["steps"] == 8
    g = spaces.from_json(_arch(tmp_path / "run"))
    assert not any(op == "skip_connect" for op, _ in g.normal)  # max_skips = 0
    genotypes.validate(g)

    (tmp_path / "run" / "pdarts.json").unlink()
    (tmp_path / "run" / "genotype.json").unlink()
    shutil.rmtree(tmp_path / "run" / "stage_1" / "checkpoints" / "4")
    again = search.run(copy.deepcopy(cfg), str(tmp_path / "run"))
    assert again["arch"] == first["arch"] and again["genotype"] == first["genotype"]
    assert json.load(open(tmp_path / "run" / "pdarts.json"))["stages"] == record["stages"]
