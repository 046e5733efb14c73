"""End to end: grid datasets through the runner, the localization metric and its report."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from helpers.grid import MeanNet, make_base
from saliencybench.benchmark.config import config_from_dict
from saliencybench.benchmark.runner import run_suite
from saliencybench.core.registry import register_dataset, register_model


@pytest.fixture
def toy_registrations():
    base, _ = make_base()

    @register_dataset("_gridtoy_base")
    def _base(*, split="test", n_samples=None, seed=0):
        return base if n_samples is None else base.subset(list(range(n_samples)))

    @register_model("_gridtoy_net")
    def _net(**kw):
        return MeanNet().eval()

    yield


@pytest.mark.slow
def test_runner_grid_pipeline_and_report(tmp_path, toy_registrations):
    from saliencybench.benchmark.report.figures import make_figures

    data = {
        "suite": {"name": "gridtoy", "datasets": ["gp", "df"], "models": ["_gridtoy_net"],
                  "methods": ["ixg@input", "saliency@input", "gradcam@final", "s_ixg_k5@input"],
                  "metrics": ["localization"], "n_samples": 16, "batch_size": 8, "device": "cpu"},
        "datasets": {"gp": {"base": "grid", "source": "_gridtoy_base", "setting": "gridpg", "threshold": 0.9},
                     "df": {"base": "grid", "source": "_gridtoy_base", "setting": "difull", "threshold": 0.9}},
        "methods": {"ixg@input": {"base": "ixg"}, "saliency@input": {"base": "saliency"},
                    "gradcam@final": {"base": "gradcam", "layer": "final"},
                    "s_ixg_k5@input": {"base": "ixg", "postprocess": ["sum", "gauss:5"]}},
    }
    cfg = config_from_dict(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = run_suite(cfg, tmp_path / "out", progress=False)
    assert not manifest["failures"], manifest["failures"]
    info = manifest["datasets"]["df"]
    assert info["setting"] == "difull" and info["threshold_used"] <= 0.99 and info["n"] == 16
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    loc = scores[scores.metric == "localization"]
    assert len(loc) == 2 * 4 * 16 and (loc.status == "ok").all()
    df_sal = loc[(loc.dataset == "df") & (loc.method == "saliency@input")]
    assert (df_sal.value == 1.0).all()  # DiFull: gradients never leave the scored cell
    figs = make_figures(tmp_path / "out")
    names = {p.name for p in figs}
    for expect in ["localization_boxes__gridtoy_net.png", "aggatt_gridpg__gridtoy_net.png",
                   "aggatt_difull__gridtoy_net.png", "spearman_gridpg__gridtoy_net.png", "aggatt_bins.csv",
                   "aggatt_examples_gridpg__gridtoy_net.png", "localization_table.csv"]:
        assert expect in names, (expect, sorted(names))
    bins = pd.read_csv(tmp_path / "out" / "figures" / "aggatt_bins.csv")
    assert bins["median_sample_id"].notna().all()


def test_runner_suite_selection_records_grids_per_dataset_and_model(tmp_path, toy_registrations):
    """select_models = "suite" through the runner: both models get the same grids, the
    screening is saved under grid_screening/, run.json records the selection per model."""
    import json

    from helpers.grid import ScaledNet

    @register_model("_gridtoy_soft")
    def _soft(**kw):
        return ScaledNet(0.7).eval()

    data = {
        "suite": {"name": "gridsel", "datasets": ["gp", "df"], "models": ["_gridtoy_net", "_gridtoy_soft"],
                  "methods": ["saliency"], "metrics": ["localization"], "n_samples": 4, "batch_size": 4,
                  "device": "cpu"},
        "datasets": {k: {"base": "grid", "source": "_gridtoy_base", "setting": s, "threshold": 0.95,
                         "select_models": "suite", "min_confidence_fallback": False}
                     for k, s in (("gp", "gridpg"), ("df", "difull"))},
    }
    manifest = run_suite(config_from_dict(data), tmp_path / "out", progress=False)
    assert not manifest["failures"], manifest["failures"]
    saved = json.loads((tmp_path / "out" / "run.json").read_text())["datasets"]
    for ds in ("gp", "df"):
        by_model = saved[ds]["by_model"]
        assert set(by_model) == {"_gridtoy_net", "_gridtoy_soft"}
        assert by_model["_gridtoy_net"]["grid_sources"] == by_model["_gridtoy_soft"]["grid_sources"]
        assert by_model["_gridtoy_net"]["selection_models"] == ["_gridtoy_net", "_gridtoy_soft"]
        assert by_model["_gridtoy_soft"]["threshold_used"] == 0.95
    assert len(list((tmp_path / "out" / "grid_screening").glob("*.pt"))) == 2  # one per model
