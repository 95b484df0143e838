"""`jaxnas study` end to end: config refusals (fast, before any compile) and, slow, a
tiny study run and `--from` on its checkpoints, whose study.json must agree with
the probe's own invariants."""

from __future__ import annotations

import json
import os

import pytest

from jaxnas import cli

STUDY = "experiments/study_digits.py"
TINY = ["--config.model.channels=2", "--config.model.steps=2", "--config.model.multiplier=2",
        "--config.darts.warmup_epochs=0", "--config.num_steps=2", "--config.study.every=2",
        "--config.study.estimators=('first_order','darts_exact')",
        "--config.study.extra_fd_eps=()", "--config.study.arch_hessian=False",
        "--config.study.trace_iters=2", "--config.study.hessian_iters=2"]


def _run(capsys, *argv):
    status = cli.main(list(argv))
    out = capsys.readouterr()
    return status, out.out + out.err


@pytest.mark.parametrize("override, expected", [
    ("--config.study.estimators=('first_order','nope')",
     "config.study.estimators=('first_order', 'nope') is not allowed: expected a "
     "non-empty list of 'first_order', 'darts_fd'"),
    ("--config.study.hessian_method=qr", "config.study.hessian_method='qr'"),
    ("--config.study.implicit_tol=0.0", "config.study.implicit_tol=0.0"),
    ("--config.study.extra_fd_eps=(0.01,-1.0)", "config.study.extra_fd_eps"),
])
def test_bad_study_values_are_refused_naming_them(capsys, tmp_path, override, expected):
    status, text = _run(capsys, "study", "--config", STUDY, "--workdir",
                        str(tmp_path / "w"), override)
    assert status == 2 and expected in text, text
    assert not os.path.exists(tmp_path / "w")  # refused before the workdir is made


def test_a_one_shot_config_is_refused(capsys, tmp_path):
    status, text = _run(capsys, "study", "--config", "experiments/spos_digits.py",
                        "--workdir", str(tmp_path / "w"))
    assert status == 2 and "expected a bilevel method" in text, text


def test_from_a_directory_that_is_not_a_search(capsys, tmp_path):
    status, text = _run(capsys, "study", "--from", str(tmp_path), "--workdir",
                        str(tmp_path / "w"))
    assert status == 2 and "no config.json there" in text, text


def test_study_needs_a_config_or_from(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["study", "--workdir", str(tmp_path / "w")])
    assert e.value.code == 2


@pytest.mark.slow
def test_study_run_then_from_its_checkpoints(capsys, tmp_path, digits_data_dir):
    run = tmp_path / "run"
    status, text = _run(capsys, "study", "--config", STUDY, "--workdir", str(run),
                        f"--config.data.data_dir={digits_data_dir}", *TINY)
    assert status == 0, text
    payload = json.loads((run / "study.json").read_text())
    assert [r["step"] for r in payload["records"]] == [2]
    est = payload["records"][0]["estimators"]
    # the unrolled reference at T=1 is darts_exact (the contract of study.unrolled)
    assert est["darts_exact"]["unrolled"]["cosine"] == pytest.approx(1.0, abs=1e-4)
    assert est["first_order"]["g2_norm"] == 0.0
    summary = payload["summary"]["estimators"]
    assert set(summary) == {"first_order", "darts_exact"}
    assert summary["first_order"]["seconds_vs_first_order"] == pytest.approx(1.0)
    for name in ("study_cosine", "study_solvers", "study_eigenvalues", "study_alphas"):
        assert (run / f"{name}.png").stat().st_size > 0
    assert (run / "genotype.json").exists()  # the search's own results too

    again = tmp_path / "again"
    status, text = _run(capsys, "study", "--from", str(run), "--workdir", str(again))
    assert status == 0, text
    from_payload = json.loads((again / "study.json").read_text())
    # the checkpoint at step 2 is the state the run probed: the same figures
    a, b = payload["records"][0], from_payload["records"][0]
    assert b["step"] == 2
    for name in ("first_order", "darts_exact"):
        for ref in ("unrolled", "implicit"):
            assert b["estimators"][name][ref]["cosine"] == pytest.approx(
                a["estimators"][name][ref]["cosine"], abs=1e-5)


def test_study_of_a_chain_search_with_a_macs_cost_builds(digits_data_dir):
    """The study builds the search's strategy with the image size, which a macs or
    latency cost table needs (it was missing: the table could not be sized)."""
    import os

    from jaxnas import config as config_lib
    from jaxnas.study import run as run_lib

    cfg = config_lib.load_config(os.path.join(os.path.dirname(__file__), "..",
                                              "experiments", "darts_chain_digits.py"))
    config_lib.apply_overrides(cfg, ["hardware.cost=macs",
                                     f"data.data_dir={digits_data_dir}"])
    with cfg.unlocked():
        cfg.study = run_lib.default_study()
    study = run_lib._Study(cfg)
    assert study.sample_shape[1:] == (8, 8, 1)
    assert study.strategy is not None
