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
    ("|none-0|+|none~0|none~1|+|none~0|none~1|none~2|", 1,
     r"the op of edge 0->1 .*got 'none-0'"),
    ("nor_conv_3x3~0|", 0, r"'\|' opening node 1"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", 15, r"input node 0 of node 2"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", 46,
     r"'\|' after the edge none~2"),
])
def test_malformed_strings_are_refused_naming_position_and_expectation(
        text, position, expected):
    with pytest.raises(ValueError,
                       match=rf"at position {position} expected {expected}"):
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
    assert SPACE.num_params(none, auxiliary=False) == SPACE.num_params(none)
    with pytest.raises(ValueError, match="no auxiliary head"):
        SPACE.num_params(none, auxiliary=True)


# ---- the discrete network

def _shapes(arch, C, N, K, image=(1, 8, 8, 3)):
    from jaxnas.networks.nb201 import TinyNetwork

    net = TinyNetwork(C=C, N=N, genotype=arch, num_classes=K)
    return jax.eval_shape(lambda k: net.init(k, jax.numpy.zeros(image), train=False),
                          jax.random.key(0))


def test_network_parameter_count_is_the_reference_figure():
    from jaxnas.networks import param_count

    v = _shapes(nb201.from_str(ALL_CONV3), 16, 5, 10, (1, 32, 32, 3))
    assert param_count(v["params"]) == 1_531_546
    # running statistics are a separate collection, not counted
    assert param_count(v["batch_stats"]) > 0
    for arch in SPACE.random(11, 4) + [nb201.from_str(EXAMPLE)]:
        v = _shapes(arch, 4, 2, 7)
        assert param_count(v["params"]) == SPACE.num_params(arch, channels=4, layers=2,
                                                            num_classes=7)


def _conv(x, w, stride, pad):
    return jax.lax.conv_general_dilated(x, w, (stride, stride),
                                        ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _bn(x, p, s):
    return (x - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]


def _relu_conv_bn(x, p, s, stride=1):
    w = p["conv"]["kernel"]
    return _bn(_conv(jax.nn.relu(x), w, stride, w.shape[0] // 2), p["bn"], s["bn"])


def _avg3(x):
    """3x3 average over the cells inside the image (count_include_pad=False), by
    summing the nine shifted windows of the zero-padded image and of a ones mask."""
    h, w = x.shape[1:3]
    xp = jax.numpy.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    mp = jax.numpy.pad(jax.numpy.ones_like(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = sum(xp[:, a:a + h, b:b + w] for a in range(3) for b in range(3))
    count = sum(mp[:, a:a + h, b:b + w] for a in range(3) for b in range(3))
    return total / count


def _reference_forward(variables, arch, x, N):
    """TinyNetwork in inference mode written as a plain loop over the edges."""
    p, s = variables["params"], variables["batch_stats"]
    x = _bn(_conv(x, p["stem_conv"]["kernel"], 1, 1), p["stem_bn"], s["stem_bn"])
    names = [nb201.OPS[o] for o in arch.ops]
    index = 0
    for stage in range(3):
        if stage:
            pc, sc = p[f"cell{index}"], s[f"cell{index}"]
            h = _relu_conv_bn(x, pc["conv_a"], sc["conv_a"], stride=2)
            h = _relu_conv_bn(h, pc["conv_b"], sc["conv_b"])
            n, hh, ww, c = x.shape
            r = x.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))
            x = h + _conv(r, pc["downsample"]["kernel"], 1, 0)
            index += 1
        for _ in range(N):
            pc, sc = p.get(f"cell{index}", {}), s.get(f"cell{index}", {})
            nodes = [x]
            for i in (1, 2, 3):
                out = 0.0
                for j in range(i):
                    e = i * (i - 1) // 2 + j  # the arch string's edge order
                    op, key = names[e], f"edge{i}_{j}"
                    if op == "skip_connect":
                        out = out + nodes[j]
                    elif op == "avg_pool_3x3":
                        out = out + _avg3(nodes[j])
                    elif op.startswith("nor_conv"):
                        out = out + _relu_conv_bn(nodes[j], pc[key], sc[key])
                nodes.append(out * jax.numpy.ones_like(x))
            x = nodes[3]
            index += 1
    x = jax.nn.relu(_bn(x, p["lastact_bn"], s["lastact_bn"])).mean(axis=(1, 2))
    return x @ p["classifier"]["kernel"] + p["classifier"]["bias"]


def test_network_forward_matches_an_independent_loop_over_the_edges():
    from jaxnas.networks.nb201 import TinyNetwork

    arch = nb201.from_str("|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|"
                          "avg_pool_3x3~1|nor_conv_3x3~2|")  # all five ops
    net = TinyNetwork(C=4, N=2, genotype=arch, num_classes=5)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = net.init(jax.random.key(2), x, train=False)
    # perturbed statistics, so that a BatchNorm reading the wrong ones shows
    rng = np.random.default_rng(3)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, l: (rng.uniform(0.5, 1.5, l.shape) if path[-1].key == "var"
                         else rng.normal(0.0, 0.1, l.shape)).astype(np.float32),
        variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    logits = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x)
    expected = _reference_forward(variables, arch, x, 2)
    assert logits.shape == (2, 5) and np.ptp(np.asarray(logits), axis=0).min() > 1e-3
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    # the comparison can fail: the same parameters read as another wiring differ
    other = nb201.from_str("|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|"
                           "skip_connect~1|nor_conv_3x3~2|")
    assert not np.allclose(_reference_forward(variables, other, x, 2), expected,
                           atol=1e-3)
    # training mode runs and updates the running statistics
    out, upd = net.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (2, 5) and np.all(np.isfinite(out))
    assert not np.allclose(upd["batch_stats"]["stem_bn"]["mean"],
                           variables["batch_stats"]["stem_bn"]["mean"])


def test_space_builds_the_network_from_model_settings():
    from jaxnas.networks.nb201 import TinyNetwork

    model = type("M", (), {"channels": 4, "layers": 1})
    net = SPACE.network(nb201.from_str(EXAMPLE), num_classes=3, model=model)
    assert isinstance(net, TinyNetwork) and (net.C, net.N, net.num_classes) == (4, 1, 3)
    assert SPACE.trainer_options(model) == {}
    SPACE.check_data(net.genotype, name="digits", num_classes=10, image_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="even height and width, got 3x3"):
        net.init(jax.random.key(0), jax.numpy.zeros((1, 6, 6, 1)))
