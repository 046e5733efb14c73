"""The quantus:* adapter: static name table vs installed Quantus, outputs, errors, manifest."""

from __future__ import annotations

import inspect
import sys

import pytest
import torch

from saliencybench.core.registry import METRICS
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext
from saliencybench.metrics import quantus_adapter as qa

quantus = pytest.importorskip("quantus")


def test_static_table_matches_installed_quantus():
    from quantus.helpers.enums import ScoreDirection
    from quantus.metrics.base import Metric as QMetric

    installed = {n: getattr(quantus, n) for n in dir(quantus)
                 if inspect.isclass(getattr(quantus, n)) and issubclass(getattr(quantus, n), QMetric)
                 and getattr(quantus, n) is not QMetric}
    assert set(installed) == set(qa.QUANTUS_METRICS)
    for name, cls in installed.items():
        higher, category = qa.QUANTUS_METRICS[name]
        assert cls.score_direction in (ScoreDirection.HIGHER, ScoreDirection.LOWER), name
        assert category.lower() == cls.evaluation_category.value.lower(), name
        if name in qa.ORDER_DIRECTION:  # direction follows `order`; the table holds its default's
            default_order = inspect.signature(cls.__init__).parameters["order"].default
            assert higher == qa.ORDER_DIRECTION[name][default_order], name
            continue
        assert higher == (cls.score_direction == ScoreDirection.HIGHER), name


def test_names_are_registered_with_direction():
    names = METRICS.names("quantus:*")
    assert len(names) == len(qa.QUANTUS_METRICS)
    assert METRICS.get("quantus:FaithfulnessCorrelation").meta["higher_is_better"] is True
    assert METRICS.get("quantus:ROAD").meta["higher_is_better"] is False
    assert METRICS.get("quantus:RelevanceMassAccuracy").meta["higher_is_better"] is True


def _ctx(model, x, y, mask=None, attribute=None):
    return EvalContext(model=model, batch=Batch(x, y, [f"s{i}" for i in range(len(y))], mask), target=y,
                       normalization=IDENTITY_NORMALIZATION, num_classes=5, attribute=attribute, method="gxi_test")


def _grad_x_input(model):
    def attribute(x, t, reduce=True, **kw):
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            out = model(xi).gather(1, t.view(-1, 1)).sum()
            (g,) = torch.autograd.grad(out, xi)
        a = g * xi.detach()
        return a.sum(1, keepdim=True) if reduce else a
    return attribute


def test_pixel_flipping_through_adapter_gives_curves(tiny_cnn):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 3, 24, 24, generator=g), torch.tensor([0, 1, 2])
    a = torch.randn(3, 1, 24, 24, generator=g)
    m = METRICS.get("quantus:PixelFlipping").obj(name="quantus:PixelFlipping", features_in_step=144)
    out = m.evaluate(_ctx(tiny_cnn, x, y), a)
    assert out.curve.shape == (3, 12) and out.values.shape == (3,)
    c = out.curve.double()
    expected = (c.sum(1) - c[:, 0] / 2 - c[:, -1] / 2) / 11  # 3*24*24 features / 144
    assert torch.allclose(out.values, expected, atol=1e-6)
    man = m.manifest()
    assert man["quantus_class"] == "PixelFlipping" and man["features_in_step"] == 144
    assert man["quantus_defaults"]["init"]["features_in_step"] == 1
    assert man["quantus_defaults"]["init"]["perturb_baseline"] == "black"


def test_localisation_metric_uses_masks_and_reports_missing_ones(tiny_cnn):
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8, :8] = 1
    a = torch.zeros(2, 1, 16, 16)
    a[0, :, :8, :8] = 1.0  # all relevance inside the mask
    a[1, :, 8:, 8:] = 1.0  # all outside
    m = METRICS.get("quantus:RelevanceMassAccuracy").obj(name="quantus:RelevanceMassAccuracy")
    out = m.evaluate(_ctx(tiny_cnn, x, y, mask=mask), a)
    assert out.values[0].item() == pytest.approx(1.0) and out.values[1].item() == pytest.approx(0.0)
    missing = m.evaluate_group([m], _ctx(tiny_cnn, x, y), a)[m.name]  # the base class reads needs_mask
    assert missing.status == ["no_mask", "no_mask"] and torch.isnan(missing.values).all()


def test_robustness_metric_reexplains_through_ctx_attribute(tiny_cnn):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 16, 16, generator=g), torch.tensor([0, 1])
    calls = []
    base = _grad_x_input(tiny_cnn)

    def attribute(x_, t_, reduce=True, **kw):
        calls.append(x_.shape[0])
        return base(x_, t_, reduce)

    m = METRICS.get("quantus:MaxSensitivity").obj(name="quantus:MaxSensitivity", nr_samples=2)
    assert m.needs_method
    a = base(x, y)
    out = m.evaluate(_ctx(tiny_cnn, x, y, attribute=attribute), a)
    assert len(calls) >= 2 and torch.isfinite(out.values).all()


def test_missing_quantus_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "quantus", None)
    with pytest.raises(ImportError, match=r"saliency-bench\[quantus\]"):
        METRICS.get("quantus:ROAD").obj(name="quantus:ROAD")


def test_batch_level_dict_output_is_broadcast():
    out = qa._to_output({1: 0.5, 5: 0.25}, 3)
    assert out.extra["batch_level"] and out.curve.shape == (3, 2)
    assert torch.allclose(out.values, torch.full((3,), 0.375, dtype=torch.float64))


class _PatchLogit(torch.nn.Module):
    """Logit 0 = sum of the top-left 8x8 patch, logit 1 = 0: only that patch matters."""

    def forward(self, x):
        s = x[:, :, :8, :8].flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_region_perturbation_direction_follows_order():
    """Quantus RegionPerturbation's curve is the score *drop* f(x) - f(x_perturbed) (Samek et
    al. 2017, AOPC): removing the truly relevant region first (MoRF) gives a larger area for
    the better map, removing it last (LeRF) a smaller one. The registered direction follows."""
    cls = METRICS.get("quantus:RegionPerturbation").obj
    assert cls.direction({"order": "morf"}) is True and cls.direction({"order": "LeRF"}) is False
    assert cls.direction({}) is True  # Quantus's default order is "morf"
    assert cls.direction({"order": "random"}) is None
    assert METRICS.get("quantus:RegionPerturbation").meta["higher_is_better"] is True
    assert METRICS.get("quantus:PixelFlipping").obj.direction({}) is None

    g = torch.Generator().manual_seed(0)
    x, y = 0.5 + 0.5 * torch.rand(2, 3, 16, 16, generator=g), torch.tensor([0, 0])
    good = 0.01 * torch.rand(2, 1, 16, 16, generator=g)
    good[:, :, :8, :8] += 1.0
    value = {}
    for order in ("morf", "lerf"):
        m = cls(name="rp", patch_size=8, regions_evaluation=2, order=order, call_kwargs={"softmax": False})
        for which, a in (("good", good), ("bad", 1.02 - good)):  # bad: the reverse order
            value[order, which] = m.evaluate(_ctx(_PatchLogit().eval(), x, y), a).values
    assert bool((value["morf", "good"] > value["morf", "bad"]).all())   # higher is better
    assert bool((value["lerf", "good"] < value["lerf", "bad"]).all())   # lower is better


def test_region_perturbation_direction_reaches_run_json_and_leaderboard(tmp_path):
    import json

    from helpers.toy import TOY_TOML, register_all
    from saliencybench.benchmark.config import load_config
    from saliencybench.benchmark.report.leaderboard import metric_directions, render_markdown
    from saliencybench.benchmark.runner import run_suite

    register_all()
    toml = TOY_TOML.replace('methods = ["toy_gxi", "toy_noise"]', 'methods = ["toy_gxi"]').replace(
        'metrics = ["toy_mean", "toy_curve"]', 'metrics = ["rp_morf", "rp_lerf"]').replace(
        "n_samples = 12", "n_samples = 4")
    toml += "".join(f"""
[metrics.rp_{o}]
base = "quantus:RegionPerturbation"
patch_size = 8
regions_evaluation = 2
order = "{o}"
""" for o in ("morf", "lerf"))
    p = tmp_path / "t.toml"
    p.write_text(toml)
    cfg = load_config(p)
    out = tmp_path / "res"
    run_suite(cfg, out, progress=False)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["metrics"]["rp_morf"]["higher_is_better"] is True
    assert manifest["metrics"]["rp_lerf"]["higher_is_better"] is False
    assert "rp_morf ↑" in render_markdown(out) and "rp_lerf ↓" in render_markdown(out)
    # without the run.json records (older runs), the config's `order` decides the same way
    assert metric_directions({"config": cfg.to_dict()}, ["rp_morf", "rp_lerf"]) == {"rp_morf": True, "rp_lerf": False}
