"""The fast paths of LRP and RISE (issue 18) give the results of the exact / straightforward code.

- rule kernels (clamped, BN-folded, fused) are cached per model and follow in-place updates,
  ``load_state_dict`` and replaced parameters;
- the relevance pass with deferred finiteness checks (one host synchronisation) equals the
  pass with per-layer checks, also where the flat fallback is needed (then it reruns);
- the fused forward (layer kernel stacked on the z+ kernel) equals separate convolutions;
- RISE's masks, generated once per call and cropped in two gathers, equal a per-mask crop.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import saliencybench as sb
from saliencybench.attributions.lrp import engine, rules
from saliencybench.attributions.lrp.canonizers import folded_params
from saliencybench.attributions.lrp.engine import lrp_relevance
from saliencybench.attributions.lrp.rules import ZPlus, positive_weight
from saliencybench.attributions.rise import mask_draws, masks_from_draws, rise_masks


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _input(b: int = 2, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(b, 3, side, side, generator=g), torch.arange(b) % 10


@pytest.mark.parametrize("change", ["inplace", "load_state_dict", "optimizer", "new_parameter"])
def test_cached_rule_kernels_follow_weight_changes(change):
    model, fresh = _resnet18(), _resnet18()
    x, t = _input()
    sb.attribute("lrp_resnet_noquant", model, x, t)  # fills the caches
    with torch.no_grad():
        for p in fresh.parameters():
            p.mul_(-0.5).add_(0.01)
    if change == "inplace":
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-0.5).add_(0.01)
    elif change == "load_state_dict":
        model.load_state_dict(fresh.state_dict())
    elif change == "optimizer":  # one SGD step onto the target weights
        for p, q in zip(model.parameters(), fresh.parameters()):
            p.grad = (p - q).detach()
        torch.optim.SGD(model.parameters(), lr=1.0).step()
    else:
        for mod, src in zip(model.modules(), fresh.modules()):
            for pn, p in list(mod._parameters.items()):
                if p is not None:
                    mod._parameters[pn] = nn.Parameter(src._parameters[pn].detach().clone())
    ours = sb.attribute("lrp_resnet_noquant", model, x, t)
    ref = sb.attribute("lrp_resnet_noquant", copy.deepcopy(fresh), x, t)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_positive_and_folded_kernels_are_cached_until_a_tensor_changes():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval()
    w1 = positive_weight(conv.weight)
    assert positive_weight(conv.weight) is w1
    f1 = folded_params(conv, bn)
    assert folded_params(conv, bn)[0] is f1[0]
    with torch.no_grad():
        bn.running_var.mul_(4.0)
    f2 = folded_params(conv, bn)
    assert f2[0] is not f1[0] and torch.allclose(f2[0], f1[0] / 2, rtol=1e-4)
    with torch.no_grad():
        conv.weight.neg_()
    assert torch.equal(positive_weight(conv.weight), conv.weight.detach().clamp(min=0))


@contextlib.contextmanager
def _no_deferral():
    yield []


@pytest.mark.parametrize("method", ["lrp_resnet_noquant", "lrp_resnet_symmetric", "lrp_resnet_mixture", "lrp_zplus"])
def test_deferred_checks_equal_per_layer_checks(monkeypatch, method):
    model = _resnet18()
    x, t = _input(3, 24)  # small maps: zero z+ denominators occur
    params = sb.METHODS.get(method).meta["defaults"]
    fast = lrp_relevance(model, x, t, **params)
    monkeypatch.setattr(engine, "deferred_checks", _no_deferral)
    exact = lrp_relevance(model, x, t, **params)
    assert torch.equal(fast.relevance, exact.relevance)
    for k in exact.checkpoints:
        assert torch.equal(fast.checkpoints[k].nan_to_num(), exact.checkpoints[k].nan_to_num())


def test_flat_fallback_under_deferral_reruns_the_exact_pass():
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    h = torch.rand(1, 2, 6, 6, dtype=torch.float64)
    h[..., :3, :3] = 0.0
    r_out = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    with rules.deferred_checks() as checks:
        ZPlus().relevance(conv, h, r_out)
    assert not rules.all_finite(checks)  # the caller must rerun: relevance met a zero denominator
    exact = ZPlus().relevance(conv, h, r_out)
    assert torch.allclose(exact.sum(), r_out.sum(), rtol=1e-12)


def test_fused_denominator_equals_separate_convolutions():
    conv = nn.Conv2d(4, 5, 3, padding=1, stride=2)
    h = torch.rand(2, 4, 9, 9)
    r = torch.rand(2, 5, 5, 5)
    z = F.conv2d(h, positive_weight(conv.weight), None, conv.stride, conv.padding)
    assert ZPlus().denominator_kernel(conv) is positive_weight(conv.weight)
    assert torch.allclose(ZPlus().relevance(conv, h, r, z), ZPlus().relevance(conv, h, r), rtol=1e-6)
    assert rules.Alpha1Beta0().denominator_kernel(conv) is None


@pytest.mark.parametrize("method", ["lrp_resnet_noquant", "lrp_resnet_mixture"])
def test_fused_forward_equals_the_separate_passes(monkeypatch, method):
    """The CUDA path (layer kernel stacked on the z+ kernel, one convolution), run on the CPU."""
    model = _resnet18()
    x, t = _input(2, 32)
    params = sb.METHODS.get(method).meta["defaults"]
    plain = lrp_relevance(model, x, t, **params)
    keep = engine._outputs_to_keep
    fused_nodes = []

    def fused(nodes, comp, n_blocks, input_node, fuse_kernels):
        out = keep(nodes, comp, n_blocks, input_node, True)
        fused_nodes.extend(out[2])
        return out

    monkeypatch.setattr(engine, "_outputs_to_keep", fused)
    ours = lrp_relevance(model, x, t, **params)
    assert len(fused_nodes) > 10
    assert torch.allclose(ours.relevance, plain.relevance, rtol=1e-4, atol=1e-6 * float(plain.relevance.abs().max()))
    for k in plain.checkpoints:
        assert torch.allclose(ours.checkpoints[k], plain.checkpoints[k], rtol=1e-5, equal_nan=True)


def _per_mask_crop(seeds, n, grid, p1, size):
    """The straightforward RISE masks: one crop per mask (Petsiuk et al. 2018 §3.2)."""
    H, W = size
    ch, cw = math.ceil(H / grid), math.ceil(W / grid)
    draws = mask_draws(seeds, n, grid, "cpu")
    out = torch.empty(len(seeds), n, 1, H, W)
    for b in range(len(seeds)):
        for i in range(n):
            cells = (draws[b, i, : grid * grid] < p1).float().view(1, 1, grid, grid)
            up = F.interpolate(cells, size=((grid + 1) * ch, (grid + 1) * cw), mode="bilinear", align_corners=False)
            dy = min(int(draws[b, i, -2] * ch), ch - 1)
            dx = min(int(draws[b, i, -1] * cw), cw - 1)
            out[b, i] = up[0, :, dy:dy + H, dx:dx + W]
    return out


def test_rise_masks_equal_per_mask_crops():
    ref = _per_mask_crop([5, 9], 12, 6, 0.3, (20, 28))
    assert torch.equal(rise_masks([5, 9], 12, 6, 0.3, (20, 28), "cpu"), ref)
    draws = mask_draws([5, 9], 12, 6, "cpu")
    assert torch.equal(masks_from_draws(draws[:, 4:9], 6, 0.3, (20, 28)), ref[:, 4:9])


def test_rise_chunking_does_not_change_the_map():
    model = _resnet18()
    x, t = _input(2, 32)
    a = sb.attribute("rise", model, x, t, n_masks=40)
    b = sb.attribute("rise", model, x, t, n_masks=40, mask_chunk=7, internal_batch_size=13)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
