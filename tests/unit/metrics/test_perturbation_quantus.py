"""Cross-check: our MoRF reproduces Quantus PixelFlipping curves on the same inputs.

Conventions mapped:
- Quantus flips *features* of the attribution broadcast to (C,H,W); a (B,1,H,W) map gives the C
  channels of a pixel equal values, which sort next to each other when the map is tie-free
  across pixels, so ``features_in_step = C * pixels_per_step`` flips whole pixels as we do.
- Quantus's curve starts after the first step (no 0 % point): it equals our ``curve[:, 1:]``.
- Quantus's "black" baseline is the per-sample minimum of x (over channels and pixels): equal to
  our ``black`` (pixel value 0) for images whose minimum is 0 with identity normalisation, and to
  our ``min`` substrate in general.
- Quantus asserts ``features_in_step`` divides H*W (not C*H*W), so the images are 24 x 24 and
  C * pixels_per_step divides 576.
- ``normalise=False, abs=False`` (ordering is unchanged by Quantus's max normalisation anyway),
  softmax of the label on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliencybench.core.registry import METRICS
from saliencybench.core.types import IDENTITY_NORMALIZATION, IMAGENET_NORMALIZATION, Batch, EvalContext

quantus = pytest.importorskip("quantus")


def _ours(model, x, y, a, norm, substrate, k):
    entry = METRICS.get("morf")
    m = entry.obj(name="morf", kind="morf", preset="none", substrate=substrate, pixels_per_step=k,
                  grid="inclusive", ties="stable", target="label", output="softmax")
    ctx = EvalContext(model=model, batch=Batch(x, y, [str(i) for i in range(len(y))]), target=y,
                      normalization=norm, num_classes=5)
    return type(m).evaluate_group([m], ctx, a)["morf"]


def _quantus_curves(model, x, y, a, k):
    from saliencybench.metrics.quantus_adapter import import_quantus

    q = import_quantus()
    pf = q.PixelFlipping(features_in_step=x.shape[1] * k, normalise=False, abs=False,
                         perturb_baseline="black", disable_warnings=True)
    res = pf(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), channel_first=True,
             softmax=True, device="cpu")
    return np.asarray(res, dtype=np.float64)


@pytest.mark.parametrize("k", [16, 64])
def test_morf_black_matches_quantus_pixelflipping(tiny_cnn, k):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 24, 24, generator=g)
    x[:, :, 5, 7] = 0.0  # the image minimum is black: Quantus's "black" = per-sample min = 0
    y = torch.tensor([0, 1, 2, 3])
    a = torch.randn(4, 1, 24, 24, generator=g)
    ours = _ours(tiny_cnn, x, y, a, IDENTITY_NORMALIZATION, "black", k)
    ref = _quantus_curves(tiny_cnn, x, y, a, k)
    assert ref.shape == (4, 576 // k)
    np.testing.assert_allclose(ours.curve[:, 1:].double().numpy(), ref, atol=1e-5, rtol=0)


def test_morf_min_substrate_matches_quantus_black_on_normalised_inputs(tiny_cnn, tiny_batch):
    x, y = tiny_batch  # standard normal: the minimum is per sample, not 0
    x = x[:, :, :24, :24].contiguous()
    a = torch.randn(4, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    ours = _ours(tiny_cnn, x, y, a, IMAGENET_NORMALIZATION, "min", 32)
    ref = _quantus_curves(tiny_cnn, x, y, a, 32)
    np.testing.assert_allclose(ours.curve[:, 1:].double().numpy(), ref, atol=1e-5, rtol=0)
