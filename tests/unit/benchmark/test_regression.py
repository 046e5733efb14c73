"""Score regression tracking: identical results pass; a perturbed method fails with a table."""

from __future__ import annotations

import pytest

from helpers.toy import TOY_TOML, register_all
from saliencybench.benchmark.cli import main
from saliencybench.benchmark.config import load_config
from saliencybench.benchmark.regression import compare_results
from saliencybench.benchmark.runner import run_suite
from saliencybench.core.registry import METHODS, register_method

register_all()


@pytest.fixture
def baseline(tmp_path):
    p = tmp_path / "toy.toml"
    p.write_text(TOY_TOML)
    cfg = load_config(p)
    run_suite(cfg, tmp_path / "base", progress=False)
    return cfg, tmp_path / "base"


def test_identical_rerun_passes(baseline, tmp_path):
    cfg, base = baseline
    run_suite(cfg, tmp_path / "new", progress=False)
    rep = compare_results(tmp_path / "new", base)
    assert rep.ok and len(rep.table) == 4


def test_perturbed_method_fails_with_table_naming_it(baseline, tmp_path, capsys):
    cfg, base = baseline
    orig = METHODS.get("toy_gxi").obj
    METHODS.remove("toy_gxi")
    register_method("toy_gxi", family="gradient")(lambda m, x, t, **kw: orig(m, x, t) * 1.01)
    try:
        run_suite(cfg, tmp_path / "new", progress=False)
    finally:
        METHODS.remove("toy_gxi")
        register_method("toy_gxi", family="gradient")(orig)
    code = main(["check-regression", str(tmp_path / "new"), "--baseline", str(base), "--tolerance", "1e-6"])
    out = capsys.readouterr().out
    assert code == 1
    assert "toy_gxi" in out and "toy_mean" in out and "toy_noise" not in out.split("status")[1]
    assert f"saliencybench accept {tmp_path / 'new'} --baseline {base}" in out
    # accepting makes it pass
    lb = tmp_path / "lb.md"
    assert main(["accept", str(tmp_path / "new"), "--baseline", str(base), "--leaderboard", str(lb)]) == 0
    assert main(["check-regression", str(tmp_path / "new"), "--baseline", str(base), "--tolerance", "1e-6"]) == 0
    assert lb.is_file()


def test_added_and_removed_entries_count_as_moved(baseline, tmp_path):
    cfg, base = baseline
    cfg.methods = ["toy_gxi"]
    run_suite(cfg, tmp_path / "new", progress=False)
    rep = compare_results(tmp_path / "new", base)
    assert not rep.ok and set(rep.moved["status"]) == {"removed"}
