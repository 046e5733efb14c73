"""Localization metrics (grid localization, mass in mask, pointing game) and the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from saliencybench.benchmark.report.figures import report_for
from saliencybench.benchmark.report.localization import localization_report, localization_status, method_layer
from saliencybench.core.registry import METRICS
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext
from saliencybench.metrics.localization import (
    Localization,
    localization_parts,
    localization_score,
    pointing_game_score,
)
from saliencybench.models.grid_settings import cell_masks


def _ctx(mask, b):
    batch = Batch(torch.zeros(b, 3, *mask.shape[-2:]), torch.zeros(b, dtype=torch.long),
                  [str(i) for i in range(b)], mask)
    return EvalContext(model=torch.nn.Identity(), batch=batch, target=batch.y,
                       normalization=IDENTITY_NORMALIZATION, num_classes=4)


@pytest.mark.parametrize("n", [2, 3])
def test_oracle_is_perfect_and_uniform_scores_one_over_n_squared(n):
    masks = cell_masks((12 * n, 12 * n), n)
    oracle = masks * torch.rand(n * n, 1, 12 * n, 12 * n) + masks  # positive only in the cell
    assert torch.equal(localization_score(oracle, masks), torch.ones(n * n))
    uniform = torch.full((n * n, 1, 12 * n, 12 * n), 0.3)
    torch.testing.assert_close(localization_score(uniform, masks), torch.full((n * n,), 1 / n**2))


def test_negative_and_empty_maps_score_zero_and_only_positive_part_counts():
    masks = cell_masks((8, 8), 2)[:2]
    neg = -torch.rand(2, 1, 8, 8)
    assert torch.equal(localization_score(neg, masks), torch.zeros(2))
    tiny = torch.full((2, 1, 8, 8), 1e-10)  # total 6.4e-9 <= 1e-7
    assert torch.equal(localization_score(tiny, masks), torch.zeros(2))
    a = torch.zeros(1, 1, 8, 8)
    a[0, 0, :4, :4] = 1.0  # cell 0: 16 positive
    a[0, 0, 4:, 4:] = -5.0  # negative mass elsewhere is ignored
    a[0, 0, :4, 4:] = 0.5  # 8 positive in cell 1
    s, inside, total = localization_parts(a, masks[:1])
    assert float(s) == pytest.approx(16 / 24) and float(inside) == 16 and float(total) == 24


def test_small_layer_maps_are_upsampled_bilinearly():
    small = torch.zeros(1, 1, 2, 2)
    small[0, 0, 0, 0] = 1.0  # a final-layer map: all mass in the top-left feature
    mask = cell_masks((16, 16), 2)[:1]
    s = localization_score(small, mask)
    up = torch.nn.functional.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False)
    assert float(s) == pytest.approx(float(up[..., :8, :8].sum() / up.sum()))
    assert 0.5 < float(s) < 1.0


def test_registered_metrics_through_eval_context():
    masks = cell_masks((8, 8), 2)
    attr = masks.clone()
    m = METRICS.get("localization").obj(name="localization")
    out = m.evaluate(_ctx(masks, 4), attr)
    assert torch.equal(out.values, torch.ones(4)) and Localization.needs_mask
    assert METRICS.get("localization").meta["higher_is_better"] is True
    no_mask = _ctx(masks, 4)
    no_mask.batch.mask = None
    out = m.evaluate_group([m], no_mask, attr)["localization"]  # the base class reads needs_mask
    assert out.status == ["no_mask"] * 4 and torch.isnan(out.values).all()
    mim = METRICS.get("mass_in_mask").obj(name="mass_in_mask")
    obj = torch.zeros(2, 1, 8, 8)
    obj[0, 0, 2:5, 2:5] = 1
    out = mim.evaluate(_ctx(obj, 2), torch.ones(2, 1, 8, 8))
    assert float(out.values[0]) == pytest.approx(9 / 64)
    assert out.status == ["ok", "empty_mask"] and torch.isnan(out.values[1])


def test_pointing_game_hits_ties_and_tolerance():
    mask = torch.zeros(3, 1, 10, 10)
    mask[:, :, 0:3, 0:3] = 1
    a = torch.zeros(3, 1, 10, 10)
    a[0, 0, 1, 1] = 2.0  # max inside -> 1
    a[1, 0, 5, 5] = 2.0  # max outside -> 0
    a[2] = 1.0  # constant map: every pixel ties -> fraction inside = 9/100
    hits, status = pointing_game_score(a, mask)
    torch.testing.assert_close(hits, torch.tensor([1.0, 0.0, 0.09]))
    assert status == ["ok"] * 3
    b = torch.zeros(1, 1, 10, 10)
    b[0, 0, 4, 4] = 1.0  # two pixels outside the 3x3 box; inside with a 2-pixel tolerance
    assert float(pointing_game_score(b, mask[:1])[0]) == 0.0
    assert float(pointing_game_score(b, mask[:1], tolerance=2)[0]) == 1.0
    out = METRICS.get("pointing_game").obj(name="pointing_game", tolerance=0).evaluate(
        _ctx(torch.zeros(1, 1, 10, 10), 1), b)
    assert out.status == ["empty_mask"] and torch.isnan(out.values).all()


def test_method_layer_parsing():
    assert method_layer("gradcam@middle") == ("gradcam", "middle")
    assert method_layer("ixg@input") == ("ixg", "input")
    manifest = {"methods": {"gc_fin": {"base": "gradcam", "params": {"layer": "final"}}}}
    assert method_layer("gc_fin", manifest) == ("gc_fin", "final")
    assert method_layer("ixg") == ("ixg", "input")


class FakeCache:
    def __init__(self, maps):
        self.maps = maps

    def load(self, dataset, model, method):
        if (dataset, model, method) not in self.maps:
            raise KeyError(method)
        return self.maps[(dataset, model, method)]


def test_report_writes_boxes_aggatt_spearman_and_sweep(tmp_path):
    g = torch.Generator().manual_seed(0)
    n_grids = 20
    ids = [f"g{i:05d}c{c}" for i in range(n_grids) for c in range(4)]
    masks = cell_masks((16, 16), 2)[torch.tensor([int(s[-1]) for s in ids])]
    methods = ["ixg@input", "gradcam@final", "s_ixg_k9@input", "s_ixg_k17@input"]
    rows, cache = [], {}
    for j, meth in enumerate(methods):
        noise = torch.rand(len(ids), 1, 16, 16, generator=g)
        maps = noise + (1 + j) * masks  # better localisation for later methods
        cache[("gridpg_synthetic", "m", meth)] = (ids, maps)
        vals = localization_score(maps, masks)
        rows += [dict(suite="s", dataset="gridpg_synthetic", model="m", method=meth, metric="localization",
                      sample_id=s, value=float(v), status="ok") for s, v in zip(ids, vals)]
    # one DiFull entry without cached maps: table and boxes still include it
    rows += [dict(suite="s", dataset="difull_synthetic", model="m", method="ixg@input", metric="localization",
                  sample_id=f"g{i:05d}c0", value=1.0, status="ok") for i in range(5)]
    rows += [dict(suite="s", dataset="gridpg_synthetic", model="m", method="ixg@input", metric="insertion",
                  sample_id=ids[0], value=0.3, status="ok")]
    scores = pd.DataFrame(rows)
    datasets = {"gridpg_synthetic": {"setting": "gridpg", "grid_n": 2}}
    (tmp_path / "run.json").write_text(json.dumps({"datasets": datasets}))
    assert report_for(Localization) is localization_report
    paths = localization_report(tmp_path, scores, FakeCache(cache))
    names = {p.name for p in paths}
    assert {"localization_table.csv", "localization_table.md", "localization_boxes_m.png",
            "aggatt_gridpg_m.png", "aggatt_bins.csv", "spearman_gridpg_m.csv", "spearman_gridpg_m.png",
            "kernel_sweep.csv"} <= names
    assert all(p.is_file() for p in paths)
    table = pd.read_csv(tmp_path / "figures" / "localization_table.csv")
    difull = table[(table.setting == "difull")]
    assert list(difull["mean"]) == [1.0] and set(table.layer) == {"input", "final"}
    bins = pd.read_csv(tmp_path / "figures" / "aggatt_bins.csv")
    assert set(bins.method) == set(methods) and (bins.groupby("method").n_maps.sum() == 4 * n_grids).all()
    # bins are sorted by localization: bin means never increase
    for _, b in bins.groupby("method"):
        assert b.sort_values("bin").mean_localization.is_monotonic_decreasing
    sp = pd.read_csv(tmp_path / "figures" / "spearman_gridpg_m.csv", index_col=0)
    assert sp.shape == (4, 4) and (abs(sp.values.diagonal() - 1) < 1e-9).all()
    sweep = pd.read_csv(tmp_path / "figures" / "kernel_sweep.csv")
    assert list(sweep.columns) == ["model", "family", "Original", "K=9", "K=17"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), log_scale=st.floats(-6, 6), n=st.sampled_from([2, 3]),
       small=st.booleans())
def test_localization_and_mass_invariant_to_positive_scaling(seed, log_scale, n, small):
    # Rao et al. 2022: the score is a ratio of positive masses, so any positive factor cancels (also for
    # layer-sized maps that are upsampled first); mass_in_mask is the same ratio on an object mask
    g = torch.Generator().manual_seed(seed)
    size = 4 * n if small else 12 * n
    a = torch.randn(n * n, 1, size, size, generator=g, dtype=torch.float64)
    masks = cell_masks((12 * n, 12 * n), n).double()
    k = 10.0 ** log_scale
    base = localization_score(a, masks)
    torch.testing.assert_close(localization_score(a * k, masks), base, rtol=1e-9, atol=1e-12)
    assert ((base >= 0) & (base <= 1)).all()
    mim = METRICS.get("mass_in_mask").obj(name="mass_in_mask")
    ctx = _ctx(masks, n * n)
    full = torch.nn.functional.interpolate(a, size=(12 * n, 12 * n), mode="bilinear", align_corners=False)
    torch.testing.assert_close(mim.evaluate(ctx, full * k).values.double(),
                               mim.evaluate(ctx, full).values.double(), rtol=1e-6, atol=1e-9)


def test_localization_status_names_every_gap():
    """Every (method, layer) of the suite gets a status in the localization table: ok,
    failed with the reason, or not run (Rao et al. 2022 Fig. 9 covers all of them)."""
    import pandas as pd


    rows = []
    for method, status in (("gradcam@final", "ok"), ("gradcam@input", "method_error: boom"),
                           ("rise@input", "ok"), ("rise@final", "ok"), ("saliency@input", "ok"),
                           ("saliency@middle", "ok")):
        for i in range(2):
            rows.append({"suite": "s", "dataset": "gridpg_synthetic", "model": "m", "method": method,
                         "metric": "localization", "sample_id": f"g{i:05d}c0", "value": 0.5,
                         "status": status})
    scores = pd.DataFrame(rows)
    st = localization_status(scores, ["localization"], {}).set_index(["base_method", "layer"])["status"]
    assert st[("gradcam", "final")] == "ok"
    assert st[("gradcam", "input")] == "failed: method_error: boom"
    assert st[("rise", "final")] == "ok"
    assert st[("rise", "middle")] == "not run: not in this suite"
    assert st[("saliency", "final")] == "not run: not in this suite"
    assert len(st) == 3 * 3  # every method x every layer of the suite


def test_metrics_package_holds_no_report_code():
    """Figures and tables are the report layer's (saliencybench.benchmark.report): no module of
    saliencybench.metrics draws, writes files or defines a report hook."""
    from pathlib import Path

    import saliencybench.metrics as metrics_pkg

    for path in Path(metrics_pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        for banned in ("matplotlib", "to_csv(", "write_text(", "savefig", "def report("):
            assert banned not in text, (path.name, banned)
