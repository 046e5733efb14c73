"""Masked input accuracy (Lee & Chang, "Attribution Mask", Algorithm 1, Eq. 11-12)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliencybench.core.registry import METRICS
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext
from saliencybench.metrics.mia import minmax_per_channel


class NoBiasNet(nn.Module):
    """A small NIB-style network (no biases, ReLU) for 3x8x8 inputs, 3 classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6 * 16, 3, bias=False)

    def forward(self, x):
        return self.fc(torch.relu(nn.functional.max_pool2d(self.conv(x), 2)).flatten(1))


def grad_x_input(model):
    def attribute(x, t, reduce=True, **kw):
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xi).gather(1, t.view(-1, 1)).sum(), xi)
        a = g * xi.detach()
        return a.sum(1, keepdim=True) if reduce else a
    return attribute


def ctx_for(model, x, y, attribute):
    return EvalContext(model=model, batch=Batch(x, y, [f"s{i}" for i in range(len(y))]), target=y,
                       normalization=IDENTITY_NORMALIZATION, num_classes=3, attribute=attribute)


def mia(**kw):
    e = METRICS.get("mia")
    return e.obj(name="mia", **{**e.meta["defaults"], **kw})


def test_minmax_per_sample_and_channel():
    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # channel 0 spans 1..3, channel 1 constant
    m = minmax_per_channel(a)
    assert m[0, 0].flatten().tolist() == [0.0, 1.0]
    assert m[0, 1].flatten().tolist() == [0.0, 0.0]  # constant channel: 0, as the official code


def test_algorithm1_inputs_and_masks_are_cumulative():
    model = NoBiasNet().eval()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    seen = []
    base = grad_x_input(model)

    def attribute(xm, t, reduce=True, **kw):
        seen.append(xm.clone())
        assert reduce is False and torch.equal(t, y)
        return base(xm, t, reduce=False)

    ctx = ctx_for(model, x, y, attribute)
    out = mia(iterations=3).evaluate(ctx, torch.zeros(4, 1, 8, 8))
    assert len(seen) == 3
    # expected masks by hand: m*_i = prod_j MinMax(A_j), A_j at x * m*_{j-1}
    m_star = torch.ones_like(x)
    for i in range(3):
        assert torch.allclose(seen[i], x * m_star, atol=1e-6)
        m_star = m_star * minmax_per_channel(base(x * m_star, y, reduce=False))
    with torch.no_grad():
        expected_last = (model(x * m_star).argmax(1) == y).double()
        expected_first = (model(x).argmax(1) == y).float()
    assert torch.equal(out.values, expected_last)
    assert torch.equal(out.curve[:, 0], expected_first)
    assert out.curve.shape == (4, 4) and out.curve_x.tolist() == [0, 1, 2, 3]
    assert ctx.forward_counter["mia"] == 4 * 4
    assert set(out.curve.unique().tolist()) <= {0.0, 1.0}


def test_constant_attribution_gives_mask_0():
    """A constant channel has min-max (A - min) / (max - min) = 0 everywhere (official code):
    a constant attribution removes the whole input from the first iteration on."""
    model = NoBiasNet().eval()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
        at_zero = model(torch.zeros_like(x)).argmax(1)
    y[0] = (y[0] + 1) % 3  # one wrong sample
    out = mia(iterations=4).evaluate(ctx_for(model, x, y, lambda xm, t, reduce=True: torch.ones_like(xm)), x[:, :1])
    assert out.curve[:, 0].tolist() == [0, 1, 1, 1, 1]
    expected = (at_zero == y).float()
    assert torch.equal(out.curve[:, 1:], expected.view(-1, 1).expand(-1, 4))


def test_single_channel_method_and_value_modes():
    model = NoBiasNet().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2])
    att = grad_x_input(model)
    single = lambda xm, t, reduce=True: att(xm, t, reduce=True)  # (B,1,H,W) maps  # noqa: E731
    out_last = mia(iterations=2).evaluate(ctx_for(model, x, y, single), x[:, :1])
    out_mean = mia(iterations=2, value="mean").evaluate(ctx_for(model, x, y, single), x[:, :1])
    assert torch.allclose(out_mean.values, out_last.curve[:, 1:].double().mean(1))
    with pytest.raises(ValueError):
        mia(iterations=2, value="median")


def test_nonfinite_attribution_is_reported():
    model = NoBiasNet().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2])
    base = grad_x_input(model)
    calls = {"n": 0}

    def attribute(xm, t, reduce=True):
        calls["n"] += 1
        a = base(xm, t, reduce=False)
        if calls["n"] == 2:
            a[1, 0, 0, 0] = float("nan")
        return a

    out = mia(iterations=3).evaluate(ctx_for(model, x, y, attribute), x[:, :1])
    assert out.status == ["ok", "nonfinite_attribution", "ok"]
    assert torch.isnan(out.values[1]) and not torch.isnan(out.values[[0, 2]]).any()
    assert METRICS.get("mia").meta["higher_is_better"] and METRICS.get("mia").obj.needs_method
