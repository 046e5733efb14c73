"""Channels-last inputs for forward-only passes (saliencybench.core.tensors)."""

from __future__ import annotations

import torch

from saliencybench.core.registry import MODELS
from saliencybench.core.tensors import fast_layout


def test_channels_last_forward_matches_nchw_and_leaves_model_alone():
    model = MODELS.get("sb_vgg").obj().eval()
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = fast_layout(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, x)
    with torch.no_grad():
        torch.testing.assert_close(model(y), model(x), rtol=1e-4, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k][0]) and v.stride() == before[k][1]


def test_other_shapes_pass_through():
    for t in (torch.randn(4, 10), torch.randn(2, 1, 8, 8), torch.randn(3, 8, 8)):
        assert fast_layout(t) is t
