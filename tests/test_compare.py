"""`saliencybench compare`: only the new method is computed, everything else is reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from _toy import TOY_TOML, register_all
from saliencybench.benchmark.cli import main

register_all()
REPO = Path(__file__).resolve().parents[1]


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
