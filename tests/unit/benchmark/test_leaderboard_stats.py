"""Leaderboard statistics: each distinct measurement counts once in the overall rank, the note
that names identical / derived columns, and [[paper]] rows with ``versus`` (Spearman)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO
from saliencybench.benchmark.config import load_config
from saliencybench.benchmark.report.leaderboard import build_tables, render_markdown
from saliencybench.benchmark.results import SCORE_COLUMNS
from saliencybench.core.registry import METRICS

ROOT = REPO
CURVE = dict(preset="otsuki2024", pixels_per_step=256)


def _record(name: str, **params) -> dict:
    entry = METRICS.get(params.pop("base", name))
    m = entry.obj(name=name, **{**entry.meta["defaults"], **params})
    return {**m.manifest(), "higher_is_better": bool(entry.meta["higher_is_better"])}


def _write(out: Path, values: dict[tuple[str, str], float], metric_params: dict[str, dict],
           *, records: bool = True, paper: list | None = None, n: int = 4) -> Path:
    """A results dir: constant per-sample values, run.json with config (and metric records)."""
    rows = [dict(suite="t", dataset="d", model="mo", method=meth, metric=met, sample_id=f"s{i}",
                 value=v[i] if isinstance(v, list) else v, status="ok")
            for (meth, met), v in values.items() for i in range(len(v) if isinstance(v, list) else n)]
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=SCORE_COLUMNS).to_csv(out / "scores.csv", index=False)
    metrics = list(dict.fromkeys(met for _, met in values))
    manifest = {"suite": "t", "seed": 0,
                "config": {"suite": {"metrics": metrics}, "metrics": metric_params, "paper": paper or []}}
    if records:
        manifest["metrics"] = {m: _record(m, **metric_params.get(m, {})) for m in metrics}
    (out / "run.json").write_text(json.dumps(manifest))
    return out


# A, B, C on insertion / deletion / mass_in_mask; lerf = insertion, morf = deletion (values
# identical, as the engine makes them on one substrate); id_score = insertion - deletion.
INS = {"A": 0.9, "B": 0.8, "C": 0.7}
DEL = {"A": 0.5, "B": 0.1, "C": 0.3}
MIM = {"A": 0.1, "B": 0.2, "C": 0.9}


def _values(lerf=None, morf=None):
    v = {}
    for m in "ABC":
        v[(m, "insertion")] = INS[m]
        v[(m, "deletion")] = DEL[m]
        v[(m, "id_score")] = INS[m] - DEL[m]
        v[(m, "lerf")] = (lerf or INS)[m]
        v[(m, "morf")] = (morf or DEL)[m]
        v[(m, "mass_in_mask")] = MIM[m]
    return v


def _params(lerf_morf_substrate: str | None = None) -> dict:
    p = {k: dict(CURVE) for k in ("insertion", "deletion", "id_score", "lerf", "morf")}
    if lerf_morf_substrate:
        p["lerf"]["substrate"] = p["morf"]["substrate"] = lerf_morf_substrate
    return p


def _overall(out: Path) -> dict[str, tuple[float, int]]:
    _, ranks, _ = build_tables(out)
    return {r.method: (r.mean_rank, r.n_metrics) for r in ranks.itertuples()}


def test_identical_and_derived_metrics_count_once_in_overall(tmp_path):
    out = _write(tmp_path / "r", _values(), _params())
    # ranks: insertion A1 B2 C3; deletion (lower is better) B1 C2 A3; mass_in_mask C1 B2 A3.
    # lerf / morf repeat insertion / deletion and id_score is their difference: not counted again
    ov = _overall(out)
    assert ov["A"] == (pytest.approx(7 / 3), 3)
    assert ov["B"] == (pytest.approx(5 / 3), 3)
    assert ov["C"] == (pytest.approx(6 / 3), 3)
    md = render_markdown(out)
    assert "`insertion` = `lerf`; `deletion` = `morf`" in md
    assert "`id_score` (from `insertion`, `deletion`)" in md
    assert "*Overall* averages 3 distinct measurements: `insertion`, `deletion`, `mass_in_mask`." in md
    assert "| 2.33 |" in md and "| 1.67 |" in md


def test_plan_is_read_from_parameters_not_names(tmp_path):
    # LeRF / MoRF on another substrate are other measurements: counted; ID score stays derived
    v = _values(lerf={"A": 0.1, "B": 0.5, "C": 0.9}, morf={"A": 0.2, "B": 0.3, "C": 0.1})
    out = _write(tmp_path / "r", v, _params("mean"))
    md = render_markdown(out)
    assert "Identical by construction" not in md
    assert "`id_score` (from `insertion`, `deletion`)" in md
    ov = _overall(out)
    assert {n for _, n in ov.values()} == {5}
    # ranks over insertion, deletion, lerf (C1 B2 A3), morf (C1 A2 B3), mass_in_mask
    assert ov["C"][0] == pytest.approx((3 + 2 + 1 + 1 + 1) / 5)
    # without run.json metric records, the suite config's parameters decide the same way
    out2 = _write(tmp_path / "r2", v, _params("mean"), records=False)
    assert _overall(out2) == ov
    out3 = _write(tmp_path / "r3", _values(), _params(), records=False)
    assert _overall(out3) == _overall(_write(tmp_path / "r4", _values(), _params()))


def test_derived_metric_counts_when_a_component_is_missing(tmp_path):
    v = {k: x for k, x in _values().items() if k[1] in ("insertion", "id_score")}
    out = _write(tmp_path / "r", v, {k: dict(CURVE) for k in ("insertion", "id_score")})
    from saliencybench.benchmark.report.leaderboard import measurement_plan

    counted, identical, derived = measurement_plan(json.loads((out / "run.json").read_text()),
                                                   ["insertion", "id_score"])
    assert counted == {"insertion": "insertion", "id_score": "id_score"} and not identical and not derived
    assert {n for _, n in _overall(out).values()} == {2}


def test_missing_metric_is_flagged_against_distinct_count(tmp_path):
    v = _values()
    del v[("A", "mass_in_mask")]
    md = render_markdown(_write(tmp_path / "r", v, _params()))
    row = next(line for line in md.splitlines() if line.startswith("| `A` |"))
    assert row.endswith("| 2.00 [2/3] |")  # insertion 1, deletion 3; 2 of the 3 measurements


def test_default_suite_lerf_morf_are_their_own_measurements():
    """The default suite: LeRF / MoRF must not repeat Insertion / Deletion (Jeon et al. 2022
    pixel flipping on another substrate than the Otsuki et al. 2024 black one)."""
    from saliencybench.benchmark.report.leaderboard import measurement_plan

    cfg = load_config(ROOT / "saliencybench" / "configs" / "default.toml")
    manifest = {"config": cfg.to_dict()}
    counted, identical, derived = measurement_plan(manifest, list(cfg.metrics))
    assert identical == []
    assert derived == {"id_score": ["insertion", "deletion"]}
    assert {"insertion", "deletion", "lerf", "morf"} <= set(counted)


def test_paper_rows_with_versus_show_the_measured_spearman(tmp_path):
    """Rao et al. 2022 supp. Tables 1-2 rows: Spearman's rho of a method's per-sample scores
    against the ``versus`` method's, next to the paper's value."""
    a = [float(i) for i in range(10)]
    ref = a[:8] + [9.0, 8.0]  # one swapped pair: rho = 1 - 6 * 2 / (10 * 99) = 0.98788
    values = {("m1", "localization"): a, ("gradcam@final", "localization"): ref}
    paper = [
        {"dataset": "d", "model": "mo", "method": "m1", "metric": "spearman", "value": 0.34,
         "versus": "gradcam@final", "source": "Rao et al. 2022 supp. Table 1"},
        {"dataset": "d", "model": "mo", "method": "m1", "metric": "localization", "value": 0.5, "source": "x"},
    ]
    out = _write(tmp_path / "r", values, {}, paper=paper)
    md = render_markdown(out)
    assert "| `m1` | spearman vs `gradcam@final` | 0.340 | 0.988 | Rao et al. 2022 supp. Table 1 |" in md
    assert "| `m1` | localization | 0.500 | 4.500 | x |" in md


def test_suite_paper_rows_with_versus_name_a_metric_to_correlate():
    """Every committed suite's ``versus`` row can be measured: the suite has one metric, or the
    row names it with ``of``; its methods are in the suite."""
    n = 0
    for path in sorted((ROOT / "saliencybench" / "configs").glob("*.toml")):
        cfg = load_config(path)
        for p in cfg.paper:
            if "versus" not in p:
                continue
            n += 1
            assert p.get("of", None) in cfg.metrics or len(cfg.metrics) == 1, (path.name, p)
            assert {p["method"], p["versus"]} <= set(cfg.methods), (path.name, p)
    assert n >= 28  # rao2022-gridpg: supp. Tables 1-2
