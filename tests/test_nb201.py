"""The NAS-Bench-201 space (`jaxnas.spaces.nb201`) and its discrete network
(`jaxnas.networks.nb201`)."""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest

from jaxnas import spaces
from jaxnas.spaces import nb201

SPACE = spaces.get("nb201")
EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|"
           "nor_conv_3x3~1|skip_connect~2|")
ALL_CONV3 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|"
             "nor_conv_3x3~1|nor_conv_3x3~2|")


def _reference_str(ops):
    """NB201's Structure.tostr written independently: nodes of (op, input) pairs."""
    names = [nb201.OPS[o] for o in ops]
    nodes = [[(names[0], 0)], [(names[1], 0), (names[2], 1)],
             [(names[3], 0), (names[4], 1), (names[5], 2)]]
    return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|"
                    for node in nodes)


def test_every_cell_round_trips_through_its_arch_string():
    seen = set()
    for i, ops in enumerate(itertools.product(range(5), repeat=6)):
        text = _reference_str(ops)
        arch = nb201.from_str(text)
        assert arch.ops == ops and nb201.to_str(arch) == text
        assert arch.index == i  # base 5, first edge most significant
        seen.add(text)
    assert len(seen) == nb201.NUM_ARCHS == 15625
    paths = np.array(list(itertools.product(range(5), repeat=6)))
    np.testing.assert_array_equal(nb201.path_to_index(paths), np.arange(15625))
    np.testing.assert_array_equal(nb201.index_to_path(np.arange(15625)), paths)


def test_the_example_string_parses_to_its_ops():
    arch = nb201.from_str(EXAMPLE)
    assert arch.names == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3",
                          "skip_connect", "nor_conv_3x3", "skip_connect")
    assert SPACE.describe(arch) == EXAMPLE


@pytest.mark.parametrize("text, position, expected", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", 33, r"the op of edge 1->2.*got the end"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", 1,
     r"the op of edge 0->1 \(one of none, skip_connect.*got 'conv'"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", 14,
     r"input node 0 of node 1.*got '1'"),
    (EXAMPLE + "x", len(EXAMPLE), r"the end of the string.*got 'x'"),
    ("|none~0|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", 8,
     r"'\+' before node 2 \(node 1 has 1 edge\), got 'n'"),
    ("|none-0|+|none~0|none~1|+|none~0|none~1|none~2|", 1, r"the op of edge 0->1 .*got 'none-0'"),
    ("nor_conv_3x3~0|", 0, r"'\|' opening node 1"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", 15, r"input node 0 of node 2"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", 46, r"'\|' after the edge none~2"),
])
def test_malformed_strings_are_refused_naming_position_and_expectation(
        text, position, expected):
    with pytest.raises(ValueError, match=rf"at position {position} expected {expected}"):
        nb201.from_str(text)
    if text.startswith("|"):  # the command line's spec reaches the same message
        with pytest.raises(ValueError, match=rf"at position {position}"):
            spaces.from_spec(text)


def test_registry_protocol_json_and_specs(tmp_path):
    assert "nb201" in spaces.names() and isinstance(SPACE, spaces.Space)
    arch = nb201.from_str(EXAMPLE)
    assert spaces.space_of(arch) == SPACE
    assert spaces.from_spec(EXAMPLE) == arch
    assert spaces.from_spec("DARTS_V2") != arch  # the DARTS names still resolve
    for a in [arch] + SPACE.random(0, 5):
        d = json.loads(json.dumps(SPACE.to_json(a)))
        assert d["type"] == "nb201" and d["arch"] == SPACE.describe(a)
        assert SPACE.from_json(d) == a and spaces.from_json(d) == a
        assert spaces.from_json({"genotype": d}) == a
    assert spaces.from_json({"genotype": EXAMPLE}) == arch
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"method": "darts", "genotype": SPACE.to_json(arch)}))
    assert spaces.from_spec(str(f)) == arch
    with pytest.raises(ValueError, match="disagrees with its arch string"):
        SPACE.from_json({"type": "nb201", "arch": EXAMPLE, "index": 3})
    with pytest.raises(ValueError, match="unknown genotype 'V9'"):
        spaces.from_spec("V9")  # a spec no space recognises keeps DARTS' message


def test_init_derive_random_and_choices():
    key = jax.random.key(0)
    alphas = SPACE.init_arch(key)
    np.testing.assert_array_equal(alphas, 1e-3 * jax.random.normal(key, (6, 5)))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5))
    w[2] = [5.0, 1.0, 5.0, 0.0, 0.0]  # a tie: the first (none) wins, as argmax
    arch = SPACE.derive(w)
    assert arch.ops == tuple(int(np.argmax(r)) for r in w) and arch.ops[2] == 0
    with pytest.raises(ValueError, match=r"shape \(6, 4\), expected \(6, 5\)"):
        SPACE.derive(w[:, :4])
    assert SPACE.num_choices == (5,) * 6
    archs = SPACE.random(3, 400)
    assert SPACE.random(3, 4) == archs[:4] and SPACE.random(4, 4) != archs[:4]
    ops = np.array([a.ops for a in archs])
    assert ops.min() == 0 and ops.max() == 4
    counts = np.bincount(ops.reshape(-1), minlength=5)
    assert counts.min() > 400 * 6 / 5 * 0.8  # every op drawn about equally
    with pytest.raises(ValueError, match="6 op indices in \\[0, 5\\)"):
        SPACE.validate(nb201.NB201Genotype((0, 1, 5, 0, 0, 0)))


def test_parameter_count_reference_figure_and_hand_count():
    assert SPACE.num_params(nb201.from_str(ALL_CONV3), channels=16, layers=5,
                            num_classes=10) == 1_531_546
    # hand count, C=2, N=1, 3 classes, cell with one nor_conv_1x1 edge and one
    # nor_conv_3x3 edge: stem 3*2*9 + 4 = 58; cells (1x1: C^2 + 2C, 3x3: 9C^2 + 2C)
    # at C=2, 4, 8: (8 + 40) + (24 + 152) + (80 + 592) = 896; residual blocks
    # 2->4: 72+8 + 144+8 + 8 = 240, 4->8: 288+16 + 576+16 + 32 = 928; last BN 16;
    # classifier 8*3 + 3 = 27.
    arch = nb201.from_str("|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|"
                          "avg_pool_3x3~1|none~2|")
    assert SPACE.num_params(arch, channels=2, layers=1, num_classes=3) == (
        58 + 896 + 240 + 928 + 16 + 27)
    # parameter-free cells: only the macro skeleton remains
    none = nb201.from_str("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    skip = nb201.from_str("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|"
                          "skip_connect~0|skip_connect~1|avg_pool_3x3~2|")
    assert SPACE.num_params(none) == SPACE.num_params(skip)
