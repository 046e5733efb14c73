"""Grid datasets (saliencybench.datasets.grid): selection, layout, determinism, samples."""

from __future__ import annotations

import warnings

import pytest
import torch

from helpers import REPO
from helpers.grid import K, MeanNet, ScaledNet, make_base
from saliencybench.core.registry import DATASETS, register_dataset
from saliencybench.datasets.grid import (
    GridOptions,
    GridSampleSet,
    GridThresholdWarning,
    build_grid_samples,
    choose_threshold,
    layout_grids,
)
from saliencybench.models.grid_settings import GridSetting


@pytest.fixture(scope="module")
def base_and_model():
    return make_base()


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridThresholdWarning)
        return fn(*a, **kw)


def test_gridpg_layout_distinct_classes_and_samples(base_and_model):
    base, model = base_and_model
    opts = GridOptions(setting="gridpg", n=2, n_samples=20, seed=3, threshold=0.9)
    ds = _quiet(build_grid_samples, base, model, opts)
    assert isinstance(ds, GridSampleSet) and len(ds) == 20
    assert ds.image_size == (16, 16) and ds.num_classes == 4 * K
    src = ds.info["grid_sources"]
    assert len(src) == 5 and all(len(r) == 4 for r in src)
    pos = {sid: i for i, sid in enumerate(base.sample_ids)}
    for row in src:
        classes = [int(base.y[pos[s]]) for s in row]
        assert len(set(classes)) == 4  # each cell a distinct class
        assert len(set(row)) == 4
    b = ds.get(list(range(8)))
    assert b.sample_ids[:5] == ["g00000c0", "g00000c1", "g00000c2", "g00000c3", "g00001c0"]
    # y = cell * K + class of the image in that cell; x = the composite; mask = that cell
    for i in range(8):
        g_, c = divmod(i, 4)
        img = base.x[pos[src[g_][c]]]
        r, cc = divmod(c, 2)
        assert int(b.y[i]) == c * K + int(base.y[pos[src[g_][c]]])
        assert torch.equal(b.x[i][:, r * 8:(r + 1) * 8, cc * 8:(cc + 1) * 8], img)
        assert b.mask[i].sum() == 64 and b.mask[i][0, r * 8, cc * 8] == 1
    # every image used is correct and confident at the recorded threshold
    with torch.no_grad():
        p = model(base.x).softmax(1)
    t = ds.info["threshold_used"]
    for row in src:
        for s in row:
            i = pos[s]
            assert int(p[i].argmax()) == int(base.y[i]) and float(p[i, base.y[i]]) >= t
    # materialised attributes agree with get()
    assert torch.equal(ds.x[:8], b.x) and torch.equal(ds.y[:8], b.y) and torch.equal(ds.mask[:8], b.mask)


@pytest.mark.parametrize("setting", ["difull", "dipart"])
def test_difull_dipart_repeat_top_left_class_and_score_corners(base_and_model, setting):
    base, model = base_and_model
    ds = _quiet(build_grid_samples, base, model, GridOptions(setting=setting, n=2, n_samples=12, seed=0, threshold=0.9))
    pos = {sid: i for i, sid in enumerate(base.sample_ids)}
    for row in ds.info["grid_sources"]:
        cls = [int(base.y[pos[s]]) for s in row]
        assert cls[0] == cls[3] and row[0] != row[3]
        assert len(set(cls[:3])) == 3  # the other cells are distinct classes
    cells = [sid[-2:] for sid in ds.sample_ids]
    assert set(cells) == {"c0", "c3"} and len(ds) == 12 and ds.info["n_grids"] == 6
    sub = ds.subset([1, 2])
    assert isinstance(sub, GridSampleSet) and sub.sample_ids == ds.sample_ids[1:3]
    w = ds.wrap_model(model)
    assert isinstance(w, GridSetting) and w.setting == setting
    b = ds.get([0, 1])
    with torch.no_grad():
        out = w(b.x)
    assert out.shape == (2, 4 * K)
    if setting == "difull":  # the target logit is the base model's logit on the cell image
        with torch.no_grad():
            ref = model(base.x[pos[ds.info["grid_sources"][0][0]]][None])
        torch.testing.assert_close(out[0, int(b.y[0])], ref[0, int(b.y[0]) % K], atol=1e-5, rtol=1e-5)


def test_3x3_grids(base_and_model):
    base, model = base_and_model
    ds = _quiet(build_grid_samples, base, model, GridOptions(setting="difull", n=3, n_samples=4, seed=0, threshold=0.5))
    assert ds.image_size == (24, 24) and ds.num_classes == 9 * K
    assert [s[-2:] for s in ds.sample_ids] == ["c0", "c8", "c0", "c8"]
    with pytest.raises(ValueError, match="distinct classes"):
        # 10 classes < 16 cells
        _quiet(build_grid_samples, base, model, GridOptions(setting="gridpg", n=4, n_samples=16))


def test_grid_construction_is_deterministic(base_and_model):
    base, model = base_and_model
    a = _quiet(build_grid_samples, base, model, GridOptions(setting="gridpg", n_samples=16, seed=7, threshold=0.9))
    b = _quiet(build_grid_samples, base, model, GridOptions(setting="gridpg", n_samples=16, seed=7, threshold=0.9))
    c = _quiet(build_grid_samples, base, model, GridOptions(setting="gridpg", n_samples=16, seed=8, threshold=0.9))
    assert a.info["grid_sources"] == b.info["grid_sources"]
    assert torch.equal(a.grids, b.grids) and a.sample_ids == b.sample_ids and torch.equal(a.y, b.y)
    assert a.info["grid_sources"] != c.info["grid_sources"]


def test_threshold_lowered_with_warning_and_recorded(base_and_model):
    base, model = base_and_model
    with torch.no_grad():
        p = model(base.x).softmax(1)
    correct = p.argmax(1) == base.y
    conf = p.gather(1, base.y[:, None]).squeeze(1)
    n99 = int((correct & (conf >= 0.99)).sum())
    needed_grids = n99 // 4 + 3  # more cells than images at 0.99
    with pytest.warns(GridThresholdWarning, match="threshold lowered"):
        ds = build_grid_samples(base, model, GridOptions(setting="gridpg", n_samples=4 * needed_grids, seed=0))
    assert ds.info["threshold_requested"] == 0.99
    assert ds.info["threshold_used"] < 0.99
    assert ds.info["n_qualifying"] >= 4 * needed_grids
    # enough at the requested threshold: no warning, threshold kept
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridThresholdWarning)
        ok = build_grid_samples(base, model, GridOptions(setting="gridpg", n_samples=4, seed=0, threshold=0.99))
    assert ok.info["threshold_used"] == 0.99


def test_choose_threshold_schedule():
    prob = torch.tensor([0.999, 0.97, 0.96, 0.85, 0.6, 0.3])
    correct = torch.tensor([True, True, True, True, True, False])
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    t, q = choose_threshold(prob, correct, labels, 0.99, needed_images=3, needed_classes=3, repeat_class=False)
    assert t == 0.95 and q.tolist() == [True, True, True, False, False, False]
    t, q = choose_threshold(prob, correct, labels, 0.99, needed_images=4, needed_classes=3, repeat_class=True)
    assert t == 0.5  # class 0 needs its second image (p = 0.6)
    t, q = choose_threshold(prob, correct, labels, 0.99, needed_images=99, needed_classes=3, repeat_class=False)
    assert t == 0.0 and int(q.sum()) == 5  # never admits wrong predictions


def test_layout_reuses_images_only_across_grids():
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    grids, reused = layout_grids(labels, torch.ones(8, dtype=torch.bool), 5, 2, "gridpg", seed=0)
    assert reused == 12  # 20 cells from 8 images
    assert all(len(set(g)) == 4 for g in grids)


def test_registered_grid_factory_calls_base_dataset(base_and_model):
    base, model = base_and_model

    @register_dataset("_toybase_for_grid_test")
    def _toy(*, split="test", n_samples=None, seed=0):
        return base if n_samples is None else base.subset(list(range(n_samples)))

    fn = DATASETS.get("grid").obj
    ds = _quiet(fn, model=model, model_name="meannet", source="_toybase_for_grid_test", setting="dipart",
                n_samples=6, seed=1, threshold=0.9, pool=None, device="cpu")
    assert len(ds) == 6 and ds.info["source"] == "_toybase_for_grid_test" and ds.info["setting"] == "dipart"
    assert DATASETS.get("gridpg_synthetic").meta["needs_model"] is True
    assert DATASETS.get("difull_synthetic").meta["setting"] == "difull"


def test_strict_selection_raises_instead_of_lowering_the_threshold(base_and_model):
    """Paper suites (min_confidence_fallback = false): too few confident images is an error."""
    from saliencybench.core.errors import GridSelectionError

    base, model = base_and_model
    with pytest.raises(GridSelectionError, match="min_confidence_fallback"):
        build_grid_samples(base, model, GridOptions(n_samples=400, threshold=0.99, min_confidence_fallback=False))
    with pytest.warns(GridThresholdWarning):  # the default suites keep the documented fallback
        build_grid_samples(base, model, GridOptions(n_samples=400, threshold=0.99))


def test_suite_selection_is_the_same_for_every_model(base_and_model):
    """select_models = "suite": an image qualifies only when every model of the suite
    classifies it with confidence >= threshold, so every model gets the same grids, and each
    model is screened once (Rao et al. 2022 supp. H.1)."""
    from saliencybench.datasets.grid import ScreeningCache, confidence_of_label, grid

    base, _ = base_and_model
    models = {"sharp": MeanNet().eval(), "soft": ScaledNet(0.7).eval()}

    @register_dataset("_gridsel_base")
    def _base(*, split="test", n_samples=None, seed=0):
        return base

    cache = ScreeningCache()
    kw = dict(source="_gridsel_base", setting="gridpg", n_samples=8, threshold=0.99,
              select_models="suite", suite_models=list(models), load_model=models.__getitem__,
              screen_cache=cache, min_confidence_fallback=False)
    a = grid(model=models["sharp"], model_name="sharp", **kw)
    b = grid(model=models["soft"], model_name="soft", **kw)
    assert cache.computed == 2  # one screening per model for the whole suite
    assert a.info["grid_sources"] == b.info["grid_sources"]
    assert torch.equal(a.grids, b.grids)
    assert a.info["selection_models"] == ["sharp", "soft"]
    used = {sid for row in a.info["grid_sources"] for sid in row}
    for m in models.values():
        p, c = confidence_of_label(m, base.x, base.y)
        ok = {base.sample_ids[i] for i in torch.nonzero(c & (p >= 0.99)).view(-1).tolist()}
        assert used <= ok
    # per-model selection (the default suites) would give the models different grids
    own = [grid(model=m, model_name=k, source="_gridsel_base", setting="gridpg", n_samples=8,
                threshold=0.99).info["grid_sources"] for k, m in models.items()]
    assert own[0] != own[1]


def test_paper_suite_selection_and_ig_steps():
    """rao2022-gridpg: whole validation split, every model, no silent threshold lowering,
    IG / S-IntGrad with 20 steps (the official code's captum n_steps=20)."""

    import tomllib

    configs = REPO / "saliencybench" / "configs"
    data = tomllib.loads((configs / "rao2022-gridpg.toml").read_text())
    for name, ds in data["datasets"].items():
        assert "pool" not in ds, name
        assert ds["select_models"] == "suite" and ds["min_confidence_fallback"] is False
        assert ds["threshold"] == 0.99
    ig = {k: v for k, v in data["methods"].items() if v.get("base") in ("integrated_gradients", "s_intgrad")}
    assert len(ig) == 9
    assert all(v.get("steps") == 20 for v in ig.values()), ig
    default = tomllib.loads((configs / "gridpg-default.toml").read_text())
    assert all(ds["min_confidence_fallback"] is True for ds in default["datasets"].values())
