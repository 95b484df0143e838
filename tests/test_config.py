"""Config loading, `--config.KEY=VALUE` overrides and up-front validation."""

import subprocess
import sys
import time

import pytest

from jaxnas import config as C
from jaxnas import search

DIGITS = "experiments/darts_digits.py"


def test_load_and_override_types():
    cfg = C.load_config(DIGITS)
    C.apply_overrides(cfg, ["num_steps=7", "optim.w_lr=0.5", "data.flip=true",
                            "darts.estimator=darts_exact", "data.data_dir=/tmp/x"])
    assert cfg.num_steps == 7 and isinstance(cfg.num_steps, int)
    assert cfg.optim.w_lr == 0.5
    assert cfg.data.flip is True
    assert cfg.darts.estimator == "darts_exact"
    assert cfg.data.data_dir == "/tmp/x"
    search.validate_config(cfg)


def test_split_config_args_both_spellings():
    rest, over = C.split_config_args(["search", "--config.seed", "3", "--config.epochs=2",
                                      "--workdir", "w"])
    assert rest == ["search", "--workdir", "w"]
    assert over == ["seed=3", "epochs=2"]


def test_unknown_key_names_it_and_suggests():
    cfg = C.load_config(DIGITS)
    with pytest.raises(C.ConfigError, match=r"unknown config key 'optim.w_lrr'.*optim.w_lr"):
        C.apply_overrides(cfg, ["optim.w_lrr=0.1"])


def test_bad_type_names_key():
    cfg = C.load_config(DIGITS)
    with pytest.raises(C.ConfigError, match=r"--config.epochs='ten': expected an integer"):
        C.apply_overrides(cfg, ["epochs=ten"])


@pytest.mark.parametrize("override, message", [
    ("darts.estimator=third_order", r"config.darts.estimator='third_order'.*'first_order'"),
    ("data.batch_size=0", r"config.data.batch_size=0.*positive integer"),
    ("data.split_fraction=1.5", r"config.data.split_fraction=1.5.*\(0.0, 1.0\)"),
    ("model.layers=2", r"config.model.layers=2.*>= 3"),
    ("model.mixed_op=vmap", r"config.model.mixed_op='vmap'.*'fused', 'loop'"),
    ("optim.w_lr=-1", r"config.optim.w_lr=-1.0.*positive number"),
    ("optim.a_lr=nan", r"config.optim.a_lr=nan.*positive number"),
    ("darts.warmup_epochs=-1", r"config.darts.warmup_epochs=-1.*non-negative integer"),
    ("darts.warmup_epochs=30", r"config.darts.warmup_epochs=30.*fewer than epochs=30"),
])
def test_bad_values_rejected_with_key_value_and_allowed(override, message):
    cfg = C.load_config(DIGITS)
    C.apply_overrides(cfg, [override])
    with pytest.raises(C.ConfigError, match=message):
        search.validate_config(cfg)


def test_bad_method():
    cfg = C.load_config(DIGITS)
    C.apply_overrides(cfg, ["method=bayes"])
    with pytest.raises(C.ConfigError, match=r"config.method='bayes'.*'darts'"):
        search.validate_config(cfg)


def test_missing_file_and_missing_get_config(tmp_path):
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load_config(str(tmp_path / "nope.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(C.ConfigError, match="defines no get_config"):
        C.load_config(str(bad))


def test_cli_bad_config_fails_fast_without_compiling(tmp_path):
    """A bad value is reported by the command line in well under the time JAX takes."""
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnas", "search", "--config", DIGITS, "--workdir",
         str(tmp_path / "w"), "--config.darts.estimator=nope"],
        capture_output=True, text=True, timeout=60)
    elapsed = time.time() - t0
    assert proc.returncode == 2
    assert "config.darts.estimator='nope'" in proc.stderr
    assert not (tmp_path / "w").exists(), "nothing should be written for a bad config"
    assert elapsed < 10, elapsed  # generous for a loaded 2-core machine; typically ~0.3 s


def test_cli_help_and_unknown_subcommand():
    out = subprocess.run([sys.executable, "-m", "jaxnas", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for sub in ("search", "train", "params", "bench", "prepare"):
        assert sub in out.stdout
    bad = subprocess.run([sys.executable, "-m", "jaxnas", "serch"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2
    assert "invalid choice: 'serch'" in bad.stderr and "search" in bad.stderr


def test_validation_imports_no_jax():
    """Config checks run before JAX is imported, so they cannot wait on compilation."""
    code = ("import sys; from jaxnas import config as C, search; "
            "c = C.load_config('%s'); search.validate_config(c); "
            "print('jax' in sys.modules)" % DIGITS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_example_configs_load_from_anywhere_without_installed_top_level_packages(
        tmp_path):
    """`experiments` and `benchmarks` are folders of the repository, not installed
    packages; a config that imports its siblings still loads from another directory
    (the loader puts the folder above the config's package on the path)."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import importlib.util, json\n"
        "installed = [m for m in ('experiments', 'benchmarks')\n"
        "             if importlib.util.find_spec(m) is not None]\n"
        "from jaxnas import config\n"
        f"c = config.load_config({os.path.join(root, 'experiments', 'gdas_digits.py')!r})\n"
        "print(json.dumps({'installed': installed, 'method': c.method,\n"
        "  'bench': importlib.util.find_spec('jaxnas.bench.runner') is not None}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # Loaded through its sibling darts_digits; the loader's path entry is gone after.
    assert out == {"installed": [], "method": "gdas", "bench": True}
