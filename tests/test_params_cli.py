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

