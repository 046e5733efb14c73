"""Method fidelity (issue 16 items 6, 7, 8, 12): Occlusion covers every position, MIA masks
are the signed per-channel attribution, Score-CAM weights are the paper's probabilities, and
Guided IG defaults are the reference implementation's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliencybench.core.guard import model_guard
from saliencybench.core.registry import METHODS


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


@pytest.mark.parametrize("size,k,s", [(30, 8, 4), (45, 16, 8)])
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


def test_occlusion_windows_reach_the_border_at_inception_size():
    """299 px with K=16, s=8: 37 windows per axis (Captum's count), the last one clipped to rows
    288-298; 36 windows stopped at row 295 and left rows 296-298 out."""
    from saliencybench.attributions.occlusion import (
        _window_masks,
        occlusion_window_counts,
    )

    n = occlusion_window_counts(299, 16, 8)
    assert n == 37
    last_row = torch.arange((n - 1) * n, n * n)  # the windows of the last row / column
    last_col = torch.arange(n - 1, n * n, n)
    rows = _window_masks(last_row, n, n, (299, 299), 16, 8).amax(0)[0]
    cols = _window_masks(last_col, n, n, (299, 299), 16, 8).amax(0)[0]
    assert rows[288:].all() and not rows[:288].any()
    assert cols[:, 288:].all() and not cols[:, :288].any()
    corner = _window_masks(torch.tensor([n * n - 1]), n, n, (299, 299), 16, 8)[0, 0]
    assert corner[288:, 288:].all() and corner.sum() == 11 * 11


def test_occlusion_matches_captum_when_windows_do_not_tile():
    """Captum's window count ceil((size - K) / s) + 1 and its clipping at the border."""
    captum_attr = pytest.importorskip("captum.attr")
    from helpers.models import TinyCNN

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
    from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext

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
    from helpers.models import TinyCNN
    from saliencybench.core.registry import METRICS

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


# ----------------------------------------------------------------------------------------
# Item 8: Score-CAM weights are the target's softmax probability of the channel-masked input.


def _cam_model(logit_scale: float = 1.0):
    from helpers.models import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():  # one dead channel at the CAM layer: constant (all-zero) map
        model.features[3].bias[2] = -1e4
        model.fc.weight *= logit_scale  # spread logits: channel weights differ visibly
    return model


def _cam_activation(model, x):
    """The activation at TinyCNN's CAM layer (``features.4``)."""
    feats = {}
    h = model.features[4].register_forward_hook(lambda m, i, o: feats.__setitem__("a", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return feats["a"]


def _scorecam_by_hand(model, x, t):
    """Wang et al. 2020 (Algorithm 1) as the authors' loop: one sample and one channel at a time."""
    act = _cam_activation(model, x)
    out = torch.zeros(x.shape[0], 1, *act.shape[-2:])
    for b in range(x.shape[0]):
        for k in range(act.shape[1]):
            m = torch.nn.functional.interpolate(act[b:b + 1, k:k + 1], size=x.shape[-2:],
                                                mode="bilinear", align_corners=False)
            if m.max() == m.min():
                continue
            m = (m - m.min()) / (m.max() - m.min())
            with torch.no_grad():
                p = torch.softmax(model(x[b:b + 1] * m), 1)[0, t[b]]
            out[b, 0] += p * act[b, k]
    return out.clamp(min=0)


def _scorecam_softmax_across_channels(model, x, t):
    """The old ``scorecam``: target logits of the masked inputs softmaxed across channels."""
    act = _cam_activation(model, x)
    out = torch.zeros(x.shape[0], 1, *act.shape[-2:])
    for b in range(x.shape[0]):
        logits = []
        for k in range(act.shape[1]):
            m = torch.nn.functional.interpolate(act[b:b + 1, k:k + 1], size=x.shape[-2:],
                                                mode="bilinear", align_corners=True)
            m = (m - m.min()) / (m.max() - m.min() + 1e-8)
            with torch.no_grad():
                logits.append(model(x[b:b + 1] * m)[0, t[b]])
        w = torch.softmax(torch.stack(logits), 0)
        out[b, 0] = (w.view(-1, 1, 1) * act[b]).sum(0)
    return out.clamp(min=0)


def test_scorecam_is_the_papers_probability_weighting():
    model = _cam_model(logit_scale=30.0)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([0, 2, 4])
    expected = _scorecam_by_hand(model, x, t)
    assert expected.abs().max() > 0
    for chunk in (5, 128):  # channels in chunks across samples
        ours = _raw("scorecam", model, x, t, layer="features.4", internal_batch_size=chunk)
        assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6), (ours - expected).abs().max()


def test_scorecam_is_no_longer_a_softmax_across_channels():
    """The old behaviour (pytorch-grad-cam's variant) now lives under ``scorecam_pgc`` only."""
    model = _cam_model(logit_scale=30.0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    t = torch.tensor([1, 3])
    old = _scorecam_softmax_across_channels(model, x, t)
    ours = _raw("scorecam", model, x, t, layer="features.4")
    # not a rescaling of the old map either: compare the maps min-max normalised
    norm = lambda a: (a - a.amin((2, 3), keepdim=True)) / (a.amax((2, 3), keepdim=True) - a.amin((2, 3), keepdim=True))
    assert (norm(ours) - norm(old)).abs().max() > 0.05
    pgc = _raw("scorecam_pgc", model, x, t, layer="features.4")
    assert torch.allclose(pgc, old, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------
# Item 12: Guided IG defaults are the reference implementation's; every built-in method's
# docstring states its defaults and where they come from.


def test_guided_ig_defaults_are_the_reference_implementations():
    """github:PAIR-code/saliency, saliency/core/guided_ig.py: ``guided_ig_impl(..., steps=200,
    fraction=0.25, max_dist=0.02)`` and ``GuidedIG.GetMask(..., x_steps=200, fraction=0.25,
    max_dist=0.02)``."""
    import inspect

    reference = {"steps": 200, "fraction": 0.25, "max_dist": 0.02}
    entry = METHODS.get("guided_ig")
    assert entry.meta["defaults"] == reference
    sig = inspect.signature(entry.obj).parameters
    assert {k: sig[k].default for k in reference} == reference


def _effective_defaults(entry) -> dict:
    """Keyword-only defaults of the function, overridden by the registry's defaults."""
    import inspect

    params = inspect.signature(entry.obj).parameters.values()
    out = {p.name: p.default for p in params
           if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}
    out.update(entry.meta["defaults"])
    return out


def _spellings(key, value) -> set[str]:
    out = {f"{key}={value!r}", f"{key}={value}"}
    if isinstance(value, str):
        out.add(f'{key}="{value}"')
    return out


def test_every_builtin_method_docstring_states_its_defaults_and_their_source():
    """Contract: the docstring of every built-in method's function has a "Defaults" paragraph,
    spells every effective keyword default as ``name=value`` (for shared implementations,
    every registered variant's value), and cites a source (a year or a ``github:`` code
    reference)."""
    import inspect
    import re

    from helpers.methods import builtin_methods

    problems = []
    for name in builtin_methods():
        entry = METHODS.get(name)
        doc = inspect.getdoc(entry.obj) or ""
        if "Defaults" not in doc:
            problems.append(f"{name}: no 'Defaults' paragraph")
        if not re.search(r"\b(19|20)\d\d\b|github:", doc):
            problems.append(f"{name}: no source (paper year or github: reference)")
        for key, value in _effective_defaults(entry).items():
            if not any(s in doc for s in _spellings(key, value)):
                problems.append(f"{name}: docstring does not state {key}={value!r}")
    assert not problems, "\n".join(problems)
