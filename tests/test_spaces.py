"""The space protocol and registry (`jaxnas.spaces`): the DARTS cell and chain spaces."""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import spaces
from jaxnas.spaces import chain as space_lib
from jaxnas.spaces import genotypes

DARTS = spaces.get("darts")
CHAIN = spaces.get("chain", space="digits", num_classes=10)


def test_registry_builds_and_finds_spaces():
    assert {"darts", "chain"} <= set(spaces.names())
    for space in (DARTS, CHAIN):
        assert isinstance(space, spaces.Space)
    assert DARTS.name == "darts" and CHAIN.name == "chain"
    assert spaces.space_of(genotypes.DARTS_V2).name == "darts"
    arch = CHAIN.random(0, 1)[0]
    assert spaces.space_of(arch) == CHAIN
    assert spaces.get("chain").space == space_lib.cifar_space()
    with pytest.raises(ValueError, match="unknown search space 'nope'.*darts"):
        spaces.get("nope")
    with pytest.raises(ValueError, match="unknown chain space 'big'"):
        spaces.get("chain", space="big")
    with pytest.raises(ValueError, match="no registered space"):
        spaces.space_of((1, 2))
    with pytest.raises(ValueError, match="already registered"):
        spaces.register("darts", object)


def test_json_round_trip_and_describe_both_spaces():
    darts_archs = [genotypes.DARTS_V1, genotypes.DARTS_V2] + DARTS.random(1, 3)
    chain_archs = CHAIN.random(1, 3)
    for space, archs in ((DARTS, darts_archs), (CHAIN, chain_archs)):
        for a in archs:
            d = json.loads(json.dumps(space.to_json(a)))
            assert space.from_json(d) == a
            assert spaces.from_json(d) == a  # any space's JSON
            assert spaces.from_json({"genotype": d}) == a  # a result file's wrapper
    # the field's own string forms
    assert DARTS.describe(genotypes.DARTS_V2) == genotypes.to_str(genotypes.DARTS_V2)
    assert genotypes.from_str(DARTS.describe(darts_archs[3])) == darts_archs[3]
    a = chain_archs[0]
    assert CHAIN.describe(a).split() == [space_lib.CHOICES[c].name for c in a.path]
    assert CHAIN.describe(a).split()[0].startswith("mb_k")


def test_from_spec_reads_every_space(tmp_path):
    a = CHAIN.random(2, 1)[0]
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"method": "spos", "genotype": CHAIN.to_json(a)}))
    assert spaces.from_spec(str(f)) == a
    f.write_text(json.dumps({"genotype": DARTS.to_json(genotypes.DARTS_V1)}))
    assert spaces.from_spec(str(f)) == genotypes.DARTS_V1
    f.write_text(json.dumps({"genotype": DARTS.describe(genotypes.DARTS_V2)}))
    assert spaces.from_spec(str(f)) == genotypes.DARTS_V2
    assert spaces.from_spec("DARTS_V2") == genotypes.DARTS_V2
    with pytest.raises(ValueError, match="JSON of no registered space"):
        spaces.from_json({"genotype": "|nor_conv_3x3~0|+|skip_connect~0|"})
    with pytest.raises(ValueError, match="unknown genotype 'V9'.*DARTS_V2"):
        spaces.from_spec("V9")


def _brute_force_darts(w, steps=4):
    """Per node, the pair of inputs with the largest summed strength (strength: best
    non-none weight), stronger first, each with its best non-none op."""
    gene, start = [], 0
    for node in range(steps):
        rows = w[start:start + node + 2]
        strength = rows[:, 1:].max(axis=1)  # column 0 is `none`
        a, b = max(itertools.permutations(range(node + 2), 2),
                   key=lambda p: (strength[p[0]] + strength[p[1]],
                                  strength[p[0]] - strength[p[1]]))
        for j in (a, b):
            gene.append((genotypes.PRIMITIVES[1 + int(np.argmax(rows[j, 1:]))], j))
        start += node + 2
    return tuple(gene)


def test_darts_derive_matches_brute_force_top2():
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = {c: rng.random((14, 8)) for c in ("normal", "reduce")}
        w["normal"][:, 0] += 1.0  # `none` strongest everywhere: never chosen
        g = DARTS.derive(w)
        assert g.normal == _brute_force_darts(w["normal"])
        assert g.reduce == _brute_force_darts(w["reduce"])
        assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    # a space with fewer concatenated nodes derives them
    g = spaces.get("darts", multiplier=2).derive(w)
    assert g.normal_concat == (4, 5) and g.normal == _brute_force_darts(w["normal"])


def test_chain_derive_matches_brute_force_over_every_path():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 6))
    best = max(itertools.product(range(6), repeat=6),
               key=lambda p: sum(w[l, c] for l, c in enumerate(p)))
    arch = CHAIN.derive(w)
    assert arch.path == best and arch.space == space_lib.digits_space()
    with pytest.raises(ValueError, match=r"shape \(5, 6\), expected \(6, 6\)"):
        CHAIN.derive(w[:5])


def test_init_arch_shapes_and_scale():
    key = jax.random.key(3)
    alphas = DARTS.init_arch(key)
    k1, k2 = jax.random.split(key)
    np.testing.assert_array_equal(alphas["normal"],
                                  1e-3 * jax.random.normal(k1, (14, 8)))
    np.testing.assert_array_equal(alphas["reduce"],
                                  1e-3 * jax.random.normal(k2, (14, 8)))
    logits = CHAIN.init_arch(key)
    assert logits.shape == (6, 6) and logits.dtype == jnp.float32
    assert 0 < float(jnp.abs(logits).max()) < 1e-2
    # derive of the initial parameters is a valid architecture
    DARTS.validate(DARTS.derive(jax.tree.map(jax.nn.softmax, alphas)))
    CHAIN.validate(CHAIN.derive(logits))


def test_random_architectures_valid_seeded_and_from_jax_keys():
    for space in (DARTS, CHAIN):
        archs = space.random(5, 50)
        for a in archs:
            assert space.validate(a) == a
        assert space.random(5, 4) == archs[:4]
        assert space.random(np.random.default_rng(5), 4) == archs[:4]
        assert space.random(6, 4) != archs[:4]
        k = jax.random.key(0)
        assert space.random(k, 3) == space.random(k, 3)
        assert space.random(0, 0) == []
        with pytest.raises(ValueError, match="expected >= 0, got -1"):
            space.random(0, -1)
    for g in DARTS.random(0, 50):
        genotypes.validate(g, steps=4, allowed_ops=genotypes.PRIMITIVES[1:])
    paths = np.array([a.path for a in CHAIN.random(0, 600)])
    assert paths.min() == 0 and paths.max() == 5
    assert CHAIN.num_choices == (6,) * 6


@pytest.mark.parametrize("genotype, auxiliary, expected", [
    (genotypes.DARTS_V2, False, 3349342),  # the reference DARTS figures
    (genotypes.DARTS_V2, True, 3825768),
    (genotypes.DARTS_V1, False, 3169414),
])
def test_darts_parameter_counts_match_the_published_figures(genotype, auxiliary,
                                                            expected):
    assert DARTS.num_params(genotype, channels=36, layers=20, num_classes=10,
                            auxiliary=auxiliary) == expected


def test_chain_parameter_count_matches_the_network_it_builds():
    from jaxnas.networks import param_count

    for arch in CHAIN.random(7, 3):
        net = CHAIN.network(arch, num_classes=10,
                            model=type("M", (), {"bn_momentum": 0.9}))
        shapes = jax.eval_shape(lambda k: net.init(k, jnp.zeros((1, 8, 8, 1)),
                                                   train=False), jax.random.key(0))
        assert param_count(shapes["params"]) == CHAIN.num_params(arch)
    assert CHAIN.num_params(arch, num_classes=3) < CHAIN.num_params(arch)


def test_chain_check_data_names_the_mismatch():
    arch = CHAIN.random(0, 1)[0]
    CHAIN.check_data(arch, name="digits", num_classes=10, image_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="1-channel images, but cifar10 has 3"):
        CHAIN.check_data(arch, name="cifar10", num_classes=10, image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="10 classes, but x has 5"):
        CHAIN.check_data(arch, name="x", num_classes=5, image_shape=(8, 8, 1))


def test_importing_the_registry_imports_no_jax():
    """The CLI resolves architectures before deciding whether it needs JAX at all."""
    import subprocess
    import sys

    code = ("import sys, jaxnas.spaces, jaxnas.spaces.resolve; "
            "jaxnas.spaces.from_spec('DARTS_V2'); print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
