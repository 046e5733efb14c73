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
