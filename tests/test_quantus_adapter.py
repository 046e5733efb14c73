"""The quantus:* adapter: static name table vs installed Quantus, outputs, errors, manifest."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
import torch

from saliencybench.benchmark.registry import METRICS
from saliencybench.benchmark.types import IDENTITY_NORMALIZATION, Batch, EvalContext
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
        assert higher == (cls.score_direction == ScoreDirection.HIGHER), name
        assert category.lower() == cls.evaluation_category.value.lower(), name


def test_names_are_registered_with_direction():
    names = METRICS.names("quantus:*")
    assert len(names) == len(qa.QUANTUS_METRICS)
    assert METRICS.get("quantus:FaithfulnessCorrelation").higher_is_better is True
    assert METRICS.get("quantus:ROAD").higher_is_better is False
    assert METRICS.get("quantus:RelevanceMassAccuracy").higher_is_better is True


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
    missing = m.evaluate(_ctx(tiny_cnn, x, y), a)
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
