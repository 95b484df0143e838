"""`jaxnas params`: exact parameter counts of discrete DARTS networks from the CLI."""

import json

import pytest

from jaxnas import cli
from jaxnas.spaces import genotypes


def _params(capsys, *args):
    code = cli.main(["params", *args])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err


@pytest.mark.parametrize("name, aux, want", [
    ("DARTS_V2", False, "3349342"),   # the reference implementation's figures
    ("DARTS_V2", True, "3825768"),
    ("DARTS_V1", False, "3169414"),
])
def test_reference_counts(capsys, name, aux, want):
    extra = ["--auxiliary"] if aux else []
    code, out, _ = _params(capsys, "--genotype", name, "--channels", "36", "--layers",
                           "20", *extra)
    assert code == 0 and out == want


def test_literal_string_and_json_file_agree_with_the_name(capsys, tmp_path):
    literal = genotypes.to_str(genotypes.DARTS_V2)
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"genotype": genotypes.to_json(genotypes.DARTS_V2)}))
    counts = [_params(capsys, "--genotype", g, "--channels", "8", "--layers", "5")[1]
              for g in ("DARTS_V2", literal, str(path))]
    assert counts[0] == counts[1] == counts[2] and int(counts[0]) > 0


def test_bad_genotype_is_named(capsys):
    code, _, err = _params(capsys, "--genotype", "NOT_A_GENOTYPE", "--channels", "8",
                           "--layers", "5")
    assert code == 2 and "NOT_A_GENOTYPE" in err and "DARTS_V2" in err



NB201_ALL_CONV3 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                   "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")


def test_nb201_arch_string_through_the_registry(capsys):
    # 1,531,546: NB201's TinyNetwork for the all-conv3x3 cell at C=16, N=5, 10 classes
    # (the figure xautodl reports; the flax network's own count is tested to equal it).
    code, out, _ = _params(capsys, "--genotype", NB201_ALL_CONV3, "--channels", "16",
                           "--layers", "5", "--classes", "10")
    assert code == 0 and out == "1531546"
    # --layers is N cells per stage for NB201: one is allowed (DARTS needs three).
    code, one, _ = _params(capsys, "--genotype", NB201_ALL_CONV3, "--channels", "16",
                           "--layers", "1", "--num-classes", "10")
    assert code == 0 and 0 < int(one) < 1531546


def test_classes_is_an_alias_of_num_classes(capsys):
    args = ["--genotype", "DARTS_V2", "--channels", "8", "--layers", "5"]
    a = _params(capsys, *args, "--classes", "7")[1]
    b = _params(capsys, *args, "--num-classes", "7")[1]
    ten = _params(capsys, *args)[1]
    # 7 classes instead of 10 removes 3 rows of the classifier (weights + bias).
    assert a == b and int(ten) - int(a) == 3 * (8 * 4 * 4 + 1)


@pytest.mark.parametrize("classes", ["0", "-3"])
def test_non_positive_classes_refused(capsys, classes):
    for genotype in ("DARTS_V2", NB201_ALL_CONV3):
        code, out, err = _params(capsys, "--genotype", genotype, "--channels", "8",
                                 "--layers", "5", "--classes", classes)
        assert code == 2 and out == "" and "--classes" in err and classes in err
        assert "Traceback" not in err


def test_darts_needs_three_layers_nb201_one(capsys):
    code, _, err = _params(capsys, "--genotype", "DARTS_V2", "--channels", "8",
                           "--layers", "2")
    assert code == 2 and "at least 3" in err
    code, _, err = _params(capsys, "--genotype", NB201_ALL_CONV3, "--channels", "8",
                           "--layers", "0")
    assert code == 2 and "at least 1" in err


def test_nb201_auxiliary_refused(capsys):
    code, _, err = _params(capsys, "--genotype", NB201_ALL_CONV3, "--channels", "8",
                           "--layers", "1", "--auxiliary")
    assert code == 2 and "auxiliary" in err


def test_chain_genotype_file_counts_and_refuses_other_sizes(capsys, tmp_path):
    from jaxnas.spaces import chain

    space = chain.digits_space()
    path = (0, 5, 1, 4, 2, 3)
    g = tmp_path / "chain.json"
    g.write_text(json.dumps({"genotype": chain.genotype_to_json(space, path, 10)}))
    # the genotype fixes its widths and depth: only its own stem width and layers fit
    code, out, _ = _params(capsys, "--genotype", str(g), "--channels", "8", "--layers",
                           "6")
    assert code == 0 and int(out) == chain.count_params(space, path, 10)
    code, _, err = _params(capsys, "--genotype", str(g), "--channels", "16",
                           "--layers", "6")
    assert code == 2 and "channels = 8" in err
