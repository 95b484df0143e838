"""The `jaxnas` command's answers to bad inputs: a message naming the bad value and
exit status 2, never a traceback (all refused before anything compiles)."""

from __future__ import annotations

import pytest

import jaxnas
from jaxnas import cli

DARTS = "experiments/darts_digits.py"


def _run(capsys, *argv):
    status = cli.main(list(argv))
    out = capsys.readouterr()
    return status, out.out + out.err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxnas {jaxnas.__version__}"


@pytest.mark.parametrize("command", [
    ["search", "--config", DARTS],
    ["study", "--config", "experiments/study_digits.py"],
    ["train", "--genotype", "DARTS_V2", "--config", "experiments/train_digits.py"],
    ["compare", "--genotype", "DARTS_V2", "--config", "experiments/train_digits.py"],
])
def test_a_workdir_that_is_a_file_is_refused_naming_it(capsys, tmp_path, command):
    path = tmp_path / "results.txt"
    path.write_text("not a directory")
    status, text = _run(capsys, *command, "--workdir", str(path))
    assert status == 2, text
    assert f"--workdir {path} is a file" in text
    assert "Traceback" not in text
    # a path below a file cannot be created either
    status, text = _run(capsys, *command, "--workdir", str(path / "run"))
    assert status == 2 and "cannot be created" in text, text


def test_config_with_a_syntax_error_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ml_collections\n\ndef get_config(:\n    pass\n")
    status, text = _run(capsys, "search", "--config", str(bad), "--workdir",
                        str(tmp_path / "w"))
    assert status == 2
    assert str(bad) in text and "syntax error at line 3" in text


def test_config_that_raises_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "raises.py"
    bad.write_text("def get_config():\n    x = {}\n    return x['missing']\n")
    status, text = _run(capsys, "search", "--config", str(bad), "--workdir",
                        str(tmp_path / "w"))
    assert status == 2
    assert str(bad) in text and "KeyError" in text and "(line 3)" in text
