"""The command line end to end on toy registrations (through --plugin) and the real registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _toy import TOY_TOML, register_all

from saliencybench.benchmark.cli import main

register_all()
PLUGIN = str(Path(__file__).with_name("toy_plugin.py"))


@pytest.fixture
def toy_config(tmp_path):
    p = tmp_path / "toy.toml"
    p.write_text(TOY_TOML)
    return p


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "saliencybench", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_unknown_method_exits_2_with_suggestion(toy_config, capsys):
    code = main(["run", "--config", str(toy_config), "--methods", "toy_gxj", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown method 'toy_gxj'" in err and "did you mean 'toy_gxi'" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_arguments_exit_2_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--n-samples", "lots"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid int value" in err[0]
    assert main(["run", "--shard", "3/2"]) == 2
    assert main(["run", "--n-samples", "0"]) == 2


def test_list_with_wildcard(capsys):
    assert main(["list", "methods", "toy_*"]) == 0
    out = capsys.readouterr().out
    assert "toy_gxi" in out and "toy_noise" in out
    assert main(["list", "metrics", "toy_*"]) == 0
    out = capsys.readouterr().out
    assert "toy_mean" in out and "↑ higher is better" in out
    assert main(["list", "methods", "zzz*"]) == 1


def test_run_leaderboard_and_regression_cli(toy_config, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", "--config", str(toy_config), "--out", str(out), "--no-progress"]) == 0
    assert (out / "scores.csv").is_file() and (out / "run.json").is_file()
    lb = (out / "leaderboard.md").read_text()
    assert "## toy / toy_net" in lb and "`toy_gxi`" in lb and "toy_mean ↑" in lb
    assert main(["leaderboard", str(out), "--format", "csv"]) == 0
    assert "mean_rank" in capsys.readouterr().out
    assert main(["leaderboard", str(out), "--format", "latex"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out
    # identical results pass the regression check
    assert main(["check-regression", str(out), "--baseline", str(out)]) == 0
    assert main(["leaderboard", str(tmp_path / "nothing")]) == 1


def test_plugin_method_appears_in_leaderboard(toy_config, tmp_path):
    """A method defined outside the package, passed with --plugin, is ranked with the others."""
    plugin = tmp_path / "my_method.py"
    plugin.write_text(
        "import torch\n"
        "from saliencybench import register_method\n"
        "@register_method('my_center', family='plugin')\n"
        "def my_center(model, x, target, **kw):\n"
        "    h, w = x.shape[-2:]\n"
        "    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')\n"
        "    d = -((yy - h / 2) ** 2 + (xx - w / 2) ** 2).float()\n"
        "    return d.expand(x.shape[0], 1, h, w).to(x.device)\n"
    )
    out = tmp_path / "res"
    r = run_cli("run", "--config", str(toy_config), "--plugin", PLUGIN, "--plugin", str(plugin),
                "--methods", "toy_gxi,my_center", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    lb = (out / "leaderboard.md").read_text()
    assert "`my_center`" in lb and "`toy_gxi`" in lb


def test_help_has_examples():
    r = run_cli("run", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "saliencybench run --methods" in r.stdout
