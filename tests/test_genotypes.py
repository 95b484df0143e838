"""Tests for jaxnas.spaces.genotypes: derive, validate, string/JSON forms, resolve."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from jaxnas.spaces import genotypes
from jaxnas.spaces.genotypes import PRIMITIVES, Genotype

P = {name: k for k, name in enumerate(PRIMITIVES)}

DARTS_V2_STR = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), "
    "('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0)"
    ", ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])")


def _reference_parse(weights, steps=4):
    """Transcription of DARTS' model_search.Network.genotype()._parse (PyTorch repo)."""
    gene = []
    n = 2
    start = 0
    for i in range(steps):
        end = start + n
        W = weights[start:end].copy()
        edges = sorted(range(i + 2), key=lambda x: -max(
            W[x][k] for k in range(len(W[x])) if k != PRIMITIVES.index("none")))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != PRIMITIVES.index("none"):
                    if k_best is None or W[j][k] > W[j][k_best]:
                        k_best = k
            gene.append((PRIMITIVES[k_best], j))
        start = end
        n += 1
    return gene


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_builtins_are_the_reference_lists():
    assert genotypes.to_str(genotypes.DARTS_V2) == DARTS_V2_STR
    assert genotypes.KNOWN_GENOTYPES["DARTS"] == genotypes.DARTS_V2
    assert genotypes.DARTS_V1.normal[-1] == ("skip_connect", 2)
    assert genotypes.DARTS_V1.reduce[-1] == ("avg_pool_3x3", 0)


def test_derive_hand_made_alphas():
    normal = np.full((14, 8), 0.01)
    # node 0 (rows 0, 1): input 1 is stronger, so it is listed first
    normal[0, P["sep_conv_5x5"]] = 0.3
    normal[1, P["dil_conv_3x3"]] = 0.6
    # node 1 (rows 2-4): `none` is the largest weight on input 0 and is ignored
    normal[2, P["none"]] = 0.95
    normal[3, P["max_pool_3x3"]] = 0.4
    normal[4, P["skip_connect"]] = 0.5
    # node 2 (rows 5-8): inputs 0 and 2 tie at 0.3 -> increasing input order
    normal[5, P["avg_pool_3x3"]] = 0.3
    normal[6, P["sep_conv_5x5"]] = 0.1
    normal[7, P["sep_conv_3x3"]] = 0.3
    normal[8, P["dil_conv_5x5"]] = 0.2
    # node 3 (rows 9-13): input 3 has an op tie -> first in PRIMITIVES
    normal[13, P["dil_conv_5x5"]] = 0.7
    normal[12, P["sep_conv_5x5"]] = 0.6
    normal[12, P["sep_conv_3x3"]] = 0.6
    reduce = np.full((14, 8), 0.125)  # all equal: inputs 0, 1 and the first op
    g = genotypes.derive({"normal": normal, "reduce": reduce})
    assert g.normal == (("dil_conv_3x3", 1), ("sep_conv_5x5", 0),
                        ("skip_connect", 2), ("max_pool_3x3", 1),
                        ("avg_pool_3x3", 0), ("sep_conv_3x3", 2),
                        ("dil_conv_5x5", 4), ("sep_conv_3x3", 3))
    assert g.reduce == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


@pytest.mark.parametrize("seed", range(5))
def test_derive_matches_reference_parse(seed):
    rng = np.random.default_rng(seed)
    # coarse values so that ties occur
    arch = {c: _softmax(rng.integers(0, 4, size=(14, 8)).astype(np.float32))
            for c in ("normal", "reduce")}
    g = genotypes.derive(arch)
    assert list(g.normal) == _reference_parse(arch["normal"])
    assert list(g.reduce) == _reference_parse(arch["reduce"])


def test_derive_softmax_flag_ranks_like_softmax_weights():
    raw = np.zeros((14, 8))
    # node 1 = rows 2, 3, 4 (inputs 0, 1, 2)
    raw[2] = [10, 5, 0, 0, 0, 0, 0, 0]  # big raw op logit, tiny softmax weight
    raw[4] = [0, 0, 0, 0, 0, 0, 0, 1]
    arch = {"normal": raw, "reduce": raw}
    soft = genotypes.derive({c: _softmax(w) for c, w in arch.items()})
    assert genotypes.derive(arch, softmax=True) == soft
    assert soft.normal[2] == ("dil_conv_5x5", 2)  # node 1: input 2 beats input 0
    assert genotypes.derive(arch).normal[2] == ("max_pool_3x3", 0)  # raw differs


def test_derive_other_steps_and_shape_errors():
    g = genotypes.derive({"normal": np.ones((20, 8)), "reduce": np.ones((20, 8))},
                         steps=5, multiplier=3)
    assert len(g.normal) == 10 and g.normal_concat == (4, 5, 6)
    genotypes.validate(g)
    with pytest.raises(ValueError, match=r"shape \(14, 8\), expected \(20, 8\)"):
        genotypes.derive({"normal": np.ones((14, 8)), "reduce": np.ones((14, 8))},
                         steps=5)


def test_string_round_trips():
    for g in (genotypes.DARTS_V1, genotypes.DARTS_V2):
        assert genotypes.from_str(genotypes.to_str(g)) == g
    assert genotypes.from_str(DARTS_V2_STR) == genotypes.DARTS_V2


def test_from_str_range_double_quotes_and_five_nodes():
    s = ('Genotype(normal=[("sep_conv_3x3", 0), ("skip_connect", 1), '
         '("dil_conv_5x5", 2), ("sep_conv_3x3", 0), ("max_pool_3x3", 3), '
         '("skip_connect", 1), ("avg_pool_3x3", 4), ("sep_conv_5x5", 0), '
         '("none", 5), ("sep_conv_7x7", 4)], normal_concat=range(2, 7), '
         "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], "
         "reduce_concat=range(2, 3))")
    g = genotypes.from_str(s)
    assert g.normal_concat == (2, 3, 4, 5, 6) and g.reduce_concat == (2,)
    assert g.normal[9] == ("sep_conv_7x7", 4) and len(g.normal) == 10
    assert genotypes.from_str(genotypes.to_str(g)) == g
    assert "normal_concat=[2, 3, 4, 5, 6]" in genotypes.to_str(g)


@pytest.mark.parametrize("s,match", [
    ("Genotype(normal=__import__('os').system('true'), normal_concat=[2], "
     "reduce=[], reduce_concat=[2])", "normal"),
    ("print('hi')", "not a Genotype"),
    ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)], normal_concat=[2],"
     " reduce=[('skip_connect', 0), ('skip_connect', 1)])", "missing reduce_concat"),
    ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)], normal_concat=[2],"
     " reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2], x=1)",
     "unknown field 'x'"),
    ("Genotype(normal=", "not a Genotype"),
])
def test_from_str_refuses_non_literals_and_bad_strings(s, match):
    with pytest.raises(ValueError, match=match):
        genotypes.from_str(s)


def test_json_round_trips():
    for g in (genotypes.DARTS_V1, genotypes.DARTS_V2):
        d = json.loads(json.dumps(genotypes.to_json(g)))
        assert d["normal"][0] == [g.normal[0][0], g.normal[0][1]]
        assert genotypes.from_json(d) == g
    with pytest.raises(ValueError, match="missing reduce_concat"):
        d = genotypes.to_json(genotypes.DARTS_V2)
        del d["reduce_concat"]
        genotypes.from_json(d)


def test_resolve_names_files_and_literals(tmp_path):
    assert genotypes.resolve("DARTS") == genotypes.DARTS_V2
    assert genotypes.resolve("DARTS_V1") == genotypes.DARTS_V1
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(genotypes.to_json(genotypes.DARTS_V1)))
    assert genotypes.resolve(str(bare)) == genotypes.DARTS_V1
    wrapped = tmp_path / "genotype.json"
    wrapped.write_text(json.dumps({"genotype": genotypes.to_json(genotypes.DARTS_V2),
                                   "arch": [[0.1]]}))
    assert genotypes.resolve(str(wrapped)) == genotypes.DARTS_V2
    assert genotypes.resolve(DARTS_V2_STR) == genotypes.DARTS_V2
    with pytest.raises(ValueError, match="DARTS_V1, DARTS_V2"):
        genotypes.resolve("DARTS_V3")
    broken = tmp_path / "broken.json"
    broken.write_text('{"genotype": {"normal": []}}')
    with pytest.raises(ValueError, match="broken.json.*missing"):
        genotypes.resolve(str(broken))


def _with(cell_edges=None, concat=None, cell="normal") -> Genotype:
    g = genotypes.DARTS_V2
    if cell_edges is not None:
        g = g._replace(**{cell: tuple(cell_edges)})
    if concat is not None:
        g = g._replace(**{cell + "_concat": tuple(concat)})
    return g


@pytest.mark.parametrize("g,steps,patterns", [
    (_with([("sep_conv_3x3", 0), ("conv_9x9", 1)]), None,
     ["normal cell edge 1", "unknown op 'conv_9x9'", "sep_conv_3x3", "dil_conv_5x5"]),
    (_with([("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0), ("skip_connect", 3)], cell="reduce"), None,
     ["reduce cell node 1", "input index 3", r"allowed 0\.\.2"]),
    (_with(genotypes.DARTS_V2.normal[:7]), None, ["normal cell has 7 edges", "even"]),
    (_with([]), None, ["normal cell has 0 edges"]),
    (genotypes.DARTS_V2, 5, ["normal cell has 8 edges", "expected 10"]),
    (_with(concat=[2, 3, 6]), None, ["normal_concat", "index 6", r"2\.\.5"]),
    (_with(concat=[1, 2]), None, ["normal_concat", "index 1"]),
    (_with(concat=[], cell="reduce"), None, ["reduce_concat is empty"]),
    (_with(concat=[2, 2]), None, ["normal_concat", "repeated"]),
    (_with([("sep_conv_3x3", 0), ("skip_connect",)]), None, ["normal edge 1", "pair"]),
])
def test_validate_error_messages(g, steps, patterns):
    with pytest.raises(ValueError) as info:
        genotypes.validate(g, steps=steps)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), (
            pattern, str(info.value))


def test_validate_accepts_more_nodes_and_skipping_concat():
    edges = tuple(("skip_connect", j) for i in range(6) for j in (0, i + 1))
    g = Genotype(edges, (3, 5, 7), genotypes.DARTS_V2.reduce, (2, 5))
    assert genotypes.validate(g) == g
    assert genotypes.validate(g._replace(normal=[list(e) for e in edges])) == g
