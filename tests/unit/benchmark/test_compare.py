"""`saliencybench compare`: only the new method is computed, everything else is reused."""

from __future__ import annotations

import json
import shutil

from helpers import REPO
from helpers.toy import TOY_TOML, register_all
from saliencybench.benchmark.cli import main

register_all()


def test_compare_computes_only_the_new_method(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "toy.toml"
    cfg.write_text(TOY_TOML)
    base = tmp_path / "results" / "toy"
    assert main(["run", "--config", str(cfg), "--out", str(base), "--no-progress"]) == 0
    # as in the repository: only scores.csv, curves.csv and run.json are committed
    shutil.rmtree(base / "parts")
    shutil.rmtree(base / "cache")
    plugin = tmp_path / "my_method.py"
    shutil.copy(REPO / "examples" / "my_method.py", plugin)
    out = tmp_path / "cmp"
    code = main(["compare", "--plugin", str(plugin), "--suite", str(cfg), "--baseline", str(base),
                 "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["attribution_calls"]["toy_gxi"] == 0
    assert manifest["attribution_calls"]["toy_noise"] == 0
    assert manifest["attribution_calls"]["my_gradient_squared"] == 12
    assert manifest["parts"]["reused"] > 0
    assert "my_gradient_squared:" in text and "rank" in text and "CI overlaps" in text
    # reused rows are byte-identical to the baseline's
    import pandas as pd

    new = pd.read_csv(out / "scores.csv", dtype=str)
    old = pd.read_csv(base / "scores.csv", dtype=str)
    kept = new[new.method != "my_gradient_squared"].reset_index(drop=True)
    assert kept.equals(old.reset_index(drop=True))
    lb = (out / "leaderboard.md").read_text()
    assert "`my_gradient_squared`" in lb and "`toy_gxi`" in lb


PROBE = """
from saliencybench import register_method
from saliencybench.core.registry import METHODS
from helpers import REPO

if "cmp_probe" not in METHODS:
    register_method("cmp_probe", family="plugin")(lambda model, x, target, **kw: x.abs())
"""


def test_compare_recomputes_methods_whose_baseline_used_other_parameters(tmp_path, capsys):
    # the committed baseline is data: rows are reused only when its run.json shows the same
    # method parameters, metric parameters, seed and target as the suite has now
    cfg = tmp_path / "toy.toml"
    cfg.write_text(TOY_TOML)
    base = tmp_path / "base"
    assert main(["run", "--config", str(cfg), "--out", str(base), "--no-progress"]) == 0
    shutil.rmtree(base / "parts")
    shutil.rmtree(base / "cache")
    changed = tmp_path / "changed.toml"
    changed.write_text(TOY_TOML + '\n[methods.toy_gxi]\npostprocess = ["abs_sum"]\n')
    plugin = tmp_path / "probe.py"
    plugin.write_text(PROBE)
    out = tmp_path / "cmp"
    assert main(["compare", "--plugin", str(plugin), "--methods", "cmp_probe", "--suite", str(changed),
                 "--baseline", str(base), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["attribution_calls"]["toy_gxi"] == 12  # post-processing changed: recomputed
    assert manifest["attribution_calls"]["toy_noise"] == 0  # unchanged: reused
    assert "recomputed existing methods" in text and "toy_gxi" in text
    # a baseline without its run.json is never trusted
    (base / "run.json").unlink()
    out2 = tmp_path / "cmp2"
    assert main(["compare", "--plugin", str(plugin), "--methods", "cmp_probe", "--suite", str(cfg),
                 "--baseline", str(base), "--out", str(out2), "--no-progress"]) == 0
    m2 = json.loads((out2 / "run.json").read_text())
    assert m2["attribution_calls"]["toy_noise"] == 12 and m2["parts"]["reused"] == 0
