"""Method fidelity (issue 16 items 6, 7, 8, 12): Occlusion covers every position, MIA masks
are the signed per-channel attribution, Score-CAM weights are the paper's probabilities, and
Guided IG defaults are the reference implementation's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliencybench.attributions.base import model_guard
from saliencybench.benchmark.registry import METHODS


def _raw(name, model, x, t, **params):
    entry = METHODS.get(name)
    kw = {**entry.meta["defaults"], **params}
    with model_guard(model), torch.enable_grad():
        return entry.obj(model, x, t, **kw).detach()


# ----------------------------------------------------------------------------------------
# Item 6: Occlusion windows run to the last row and column.


class _LastRowModel(nn.Module):
    """Two logits that depend only on the input's last row (class 0) / last column (class 1)."""

    def forward(self, x):
        return torch.stack([x[:, :, -1, :].sum((1, 2)), x[:, :, :, -1].sum((1, 2))], 1)


@pytest.mark.parametrize("size,k,s", [(30, 8, 4), (299, 16, 8)])
def test_occlusion_covers_last_row_and_column(size, k, s):
    """(size - K) mod s trailing rows / columns used to get nothing; now every pixel of the last
    row (class 0) and column (class 1) gets the mean drop of the windows covering it, 1 per
    pixel here (x = 1 everywhere, baseline 0)."""
    x = torch.ones(2, 1, size, size)
    t = torch.tensor([0, 1])
    a = _raw("occlusion", _LastRowModel(), x, t, window=k, stride=s)
    assert a.shape == (2, 1, size, size)
    # class 0: every pixel of the last row is occluded by some window, drop = K clipped pixels
    # of the last row; it must be positive all along the last row, including its last columns.
    assert (a[0, 0, -1, :] > 0).all()
    assert (a[1, 0, :, -1] > 0).all()
    # only the last row / column matters
    assert torch.count_nonzero(a[0, 0, : size - k]) == 0
    assert torch.count_nonzero(a[1, 0, :, : size - k]) == 0


def test_occlusion_matches_captum_when_windows_do_not_tile():
    """Captum's window count ceil((size - K) / s) + 1 and its clipping at the border."""
    captum_attr = pytest.importorskip("captum.attr")
    from conftest import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 3, 30, 30, generator=g), torch.tensor([1, 3])
    ours = _raw("occlusion", model, x, t, window=8, stride=4)
    ref = captum_attr.Occlusion(model).attribute(
        x, target=t, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.0,
        perturbations_per_eval=16)
    ref = ref[:, :1]
    err = (ours - ref).abs().max().item()
    assert err <= 1e-4 * ref.abs().max().item(), err


# ----------------------------------------------------------------------------------------
# Item 7: MIA masks are the signed per-channel attribution for every method (004 Alg. 1, Eq. 11).


def _mia_ctx(model, x, y, method):
    from saliencybench.attributions.base import compute_attribution
    from saliencybench.benchmark.types import IDENTITY_NORMALIZATION, Batch, EvalContext

    def attribute(xm, t, reduce=True, **kw):  # what the runner passes to metrics
        return compute_attribution(method, model, xm, t, reduce=reduce)

    return EvalContext(model=model, batch=Batch(x, y, [f"s{i}" for i in range(len(y))]), target=y,
                       normalization=IDENTITY_NORMALIZATION, num_classes=5, attribute=attribute)


def _signed_minmax(a):
    lo, hi = a.amin((2, 3), keepdim=True), a.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (a - lo) / (hi - lo).clamp(min=1e-30), torch.zeros_like(a))


def test_mia_uses_signed_guided_backprop():
    """Guided Backprop is registered with ``abs_sum``; MIA must min-max the signed per-channel
    GBP, not |GBP| (Algorithm 1 with Expl = GBP, Eq. 11 per channel)."""
    from conftest import TinyCNN
    from saliencybench.benchmark.registry import METRICS

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3])
    entry = METRICS.get("mia")
    metric = entry.obj(name="mia", **{**entry.meta["defaults"], "iterations": 3})

    seen = []
    ctx = _mia_ctx(model, x, y, "guided_backprop")
    inner = ctx.attribute

    def spy(xm, t, reduce=True, **kw):
        a = inner(xm, t, reduce=reduce, **kw)
        seen.append(a)
        return a

    ctx.attribute = spy
    out = metric.evaluate(ctx, torch.zeros(4, 1, 32, 32))

    # the direct loop: signed raw GBP of the masked input, min-max per sample and channel
    m_star, m_abs = torch.ones_like(x), torch.ones_like(x)
    for i in range(3):
        raw = _raw("guided_backprop", model, x * m_star, y)
        assert (raw < 0).any()  # |.| would change this mask
        assert torch.allclose(seen[i], raw, atol=1e-6)
        m_star = m_star * _signed_minmax(raw)
        m_abs = m_abs * _signed_minmax(_raw("guided_backprop", model, x * m_abs, y).abs())
    assert not torch.allclose(m_star, m_abs)
    with torch.no_grad():
        expected = (model(x * m_star).argmax(1) == y).double()
    assert torch.equal(out.values, expected)
