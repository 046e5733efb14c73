"""Model randomisation through the runner, the leaderboard's not-worse-than-best marks and the
critical-difference / randomisation figures of ``make_figures``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.toy import TOY_TOML, register_all
from saliencybench.benchmark.config import load_config
from saliencybench.benchmark.report.figures import make_figures
from saliencybench.benchmark.report.leaderboard import not_worse_marks, render_markdown
from saliencybench.benchmark.results import read_scores
from saliencybench.benchmark.runner import run_suite

register_all()


def test_runner_recomputes_maps_on_the_randomised_copies(tmp_path):
    """The runner's attribute closure takes ``model=``: a method that reads the model loses its
    similarity when the layers are randomised, one that ignores it (seeded noise) keeps 1."""
    p = tmp_path / "toy.toml"
    p.write_text(TOY_TOML.replace('metrics = ["toy_mean", "toy_curve"]', 'metrics = ["randomisation_cascading"]'))
    out = tmp_path / "res"
    run_suite(load_config(p), out, progress=False)
    s = read_scores(out)
    assert (s["status"] == "ok").all()
    by = s.groupby("method")["value"].mean()
    assert by["toy_noise"] == 1.0
    assert by["toy_gxi"] < 0.9
    figs = make_figures(out)
    names = {f.name for f in figs}
    assert "randomisation_randomisation_cascading_toy_toy_net.png" in names
    assert "critical_difference.png" in names


def _scores(values: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = [dict(suite="s", dataset="d", model="m", method=k, metric="x", sample_id=f"i{j}", value=float(v),
                 status="ok") for k, vs in values.items() for j, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_marks_identical_methods_not_worse_and_a_negation_worse():
    rng = np.random.default_rng(0)
    v = rng.normal(1.0, 0.3, 30)
    s = _scores({"a": v, "a_copy": v.copy(), "neg": -v, "a_plus": v + 0.01 * rng.normal(size=30)})
    marks = not_worse_marks(s, {"x": True})
    assert ("d", "m", "x", "neg") not in marks
    best = max(("a", "a_copy", "a_plus"), key=lambda k: s[s["method"] == k]["value"].mean())
    assert {m for *_, m in marks} == {"a", "a_copy", "a_plus"} - {best}


def test_leaderboard_legend_and_marks(tmp_path):
    p = tmp_path / "toy.toml"
    p.write_text(TOY_TOML)
    out = tmp_path / "res"
    run_suite(load_config(p), out, progress=False)
    text = render_markdown(out)
    assert "† not significantly worse than the column's best" in text and "α = 0.05" in text
