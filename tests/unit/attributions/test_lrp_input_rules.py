"""LRP for ResNet: the first layer's rule (``input_rule``) and max pooling in the relevance
pass (``maxpool``), Otsuki et al. 2024 official code vs the z+ rule on the signed image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliencybench.attributions.lrp import LRPConfig, LRPUnsupportedModel, lrp, lrp_relevance
from saliencybench.attributions.lrp.rules import Flat, WPlus, ZBox, ZPlus
from saliencybench.core.registry import METHODS, MODELS

MEAN = torch.tensor([0.485, 0.456])
STD = torch.tensor([0.229, 0.224])


def input_relevance(conv: nn.Conv2d, x: torch.Tensor, r_out: torch.Tensor, kind: str, lo=None, hi=None):
    """The first-layer rule named by ``LRPConfig.input_rule``."""
    rule = {"zplus": ZPlus(), "ones": WPlus(), "flat": Flat(), "zbox": ZBox(lo, hi)}[kind]
    return rule.relevance(conv, x, r_out)


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2, bias=False).double()
    return conv


def _closed_form(conv: nn.Conv2d, x: torch.Tensor, r_out: torch.Tensor, kind: str) -> torch.Tensor:
    """Explicit sums over receptive fields (unfold / fold), independent of autograd:
    R_i = sum_j c_ij R_j / sum_i' c_i'j with c_ij the rule's contribution of input i to output j."""
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    h, w = x.shape[-2:]
    unf = lambda t: F.unfold(t, k, padding=p, stride=s)  # (B, C*k*k, L); padding = 0
    wt = conv.weight.detach().flatten(1)  # (O, C*k*k)
    xs = unf(x)
    inside = unf(torch.ones_like(x))  # 1 for real pixels, 0 for padding
    if kind == "zplus":
        c = wt.clamp(min=0)[None, :, :, None] * xs[:, None]
    elif kind == "ones":
        c = wt.clamp(min=0)[None, :, :, None] * inside[:, None]
    elif kind == "flat":
        c = torch.ones_like(wt)[None, :, :, None] * inside[:, None]
    elif kind == "zbox":
        lo = unf(((0 - MEAN.double()) / STD.double()).view(1, -1, 1, 1).expand_as(x).contiguous())
        hi = unf(((1 - MEAN.double()) / STD.double()).view(1, -1, 1, 1).expand_as(x).contiguous())
        c = (wt[None, :, :, None] * xs[:, None] - wt.clamp(min=0)[None, :, :, None] * lo[:, None]
             - wt.clamp(max=0)[None, :, :, None] * hi[:, None])
    z = c.sum(2, keepdim=True)  # (B, O, 1, L)
    r = r_out.flatten(2)[:, :, None, :]  # (B, O, 1, L)
    contrib = (c * r / z).sum(1)  # (B, C*k*k, L)
    return F.fold(contrib, (h, w), k, padding=p, stride=s)


def _image(b: int = 2, h: int = 7, w: int = 7) -> torch.Tensor:
    torch.manual_seed(1)
    pix = torch.rand(b, 2, h, w, dtype=torch.float64)
    return (pix - MEAN.double().view(1, -1, 1, 1)) / STD.double().view(1, -1, 1, 1)


@pytest.mark.parametrize("kind", ["zplus", "ones", "flat", "zbox"])
def test_input_rule_equals_its_closed_form_on_one_conv(kind):
    conv = _conv()
    x = _image()
    r_out = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    lo = ((0 - MEAN.double()) / STD.double()).view(1, -1, 1, 1)
    hi = ((1 - MEAN.double()) / STD.double()).view(1, -1, 1, 1)
    got = input_relevance(conv, x, r_out, kind, lo, hi)
    want = _closed_form(conv, x, r_out, kind)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    if kind != "zplus":  # every non-degenerate rule conserves; zplus on signed x may not
        assert torch.allclose(got.sum((1, 2, 3)), r_out.sum((1, 2, 3)), rtol=1e-10)


@pytest.mark.parametrize("kind", ["zplus", "ones", "flat", "zbox"])
def test_engine_uses_the_input_rule_on_a_single_conv_model(kind):
    # model = conv + flatten: the explained "logit" is one conv output unit, so the map is the
    # closed form with a one-hot output relevance (init="logit", value = the logit)
    conv = _conv()
    model = nn.Sequential(conv, nn.Flatten()).eval()
    x = _image()
    t = torch.tensor([5, 30])
    got = lrp(model, x, t, init="logit", input_rule=kind, input_mean=MEAN.tolist(),
              input_std=STD.tolist())
    logits = model(x).detach()
    r_out = torch.zeros_like(logits)
    r_out[torch.arange(2), t] = logits[torch.arange(2), t]
    want = _closed_form(conv, x, r_out.view(2, 3, 4, 4), kind)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_zbox_matches_zennit():
    zennit_rules = pytest.importorskip("zennit.rules")
    conv = _conv()
    x = _image()
    r_out = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    lo = ((0 - MEAN.double()) / STD.double()).view(1, -1, 1, 1)
    hi = ((1 - MEAN.double()) / STD.double()).view(1, -1, 1, 1)
    # zennit adds 1e-6 * sign(z) to the denominator by default; ours is unstabilised
    handles = zennit_rules.ZBox(low=lo, high=hi, stabilizer=0.0).register(conv)
    try:
        xg = x.clone().requires_grad_(True)
        (theirs,) = torch.autograd.grad(conv(xg), xg, r_out)
    finally:
        handles.remove()
    ours = input_relevance(conv, x, r_out, "zbox", lo, hi)
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def _pool_model(pool: nn.Module) -> nn.Module:
    conv = nn.Conv2d(1, 1, 1, bias=False)  # identity: the map is the relevance at the pool input
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten()).eval().double()


def test_maxpool_avg2_is_a_2x2_average_pool_and_wta_routes_to_the_argmax():
    # ResNet's max pool (3x3, stride 2, padding 1) of an 8x8 map gives 4x4, as does the 2x2
    # average pool (stride 2) the official code puts in its place in the relevance pass.
    model = _pool_model(nn.MaxPool2d(3, stride=2, padding=1))
    torch.manual_seed(2)
    x = 0.1 + torch.rand(1, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([5])  # output (1, 1) of the 4x4 map: input rows / cols 2..3 under avg2
    logit = float(model(x).detach()[0, 5])
    avg = lrp(model, x, t, init="logit", maxpool="avg2", input_rule="zplus")[0, 0]
    want = torch.zeros(8, 8, dtype=torch.float64)
    block = x[0, 0, 2:4, 2:4]
    want[2:4, 2:4] = block / block.sum() * logit
    assert torch.allclose(avg, want, rtol=1e-10, atol=1e-14)
    wta = lrp(model, x, t, init="logit", maxpool="wta", input_rule="zplus")[0, 0]
    assert int((wta != 0).sum()) == 1  # winner takes all: the arg-max of the 3x3 window
    assert float(wta.max()) == pytest.approx(logit, rel=1e-12)
    assert float(x[0, 0, 1:4, 1:4].max()) == pytest.approx(logit, rel=1e-12)


def test_maxpool_avg2_refuses_a_shape_mismatch():
    model = _pool_model(nn.MaxPool2d(3, stride=2, padding=1))
    x = torch.rand(1, 1, 7, 7, dtype=torch.float64)  # max pool: 4x4, 2x2 average pool: 3x3
    with pytest.raises(LRPUnsupportedModel, match="avg2"):
        lrp(model, x, torch.tensor([0]), maxpool="avg2")


def test_config_validates_the_new_parameters():
    with pytest.raises(ValueError, match="input_rule"):
        LRPConfig(input_rule="box")
    with pytest.raises(ValueError, match="maxpool"):
        LRPConfig(maxpool="avg")
    with pytest.raises(ValueError, match="input_mean and input_std"):
        LRPConfig(input_rule="zbox")
    cfg = LRPConfig(input_rule="zbox", input_mean=[0.5, 0.5], input_std=[0.25, 0.25])
    assert cfg.input_mean == (0.5, 0.5) and hash(cfg) is not None


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n.startswith("lrp_resnet")])
def test_every_lrp_resnet_variant_offers_input_rule_and_maxpool(name):
    d = METHODS.get(name).meta["defaults"]
    assert d["input_rule"] == "ones" and d["maxpool"] == "wta"


def test_default_lrp_resnet_input_relevance_is_nonnegative_on_the_zoo_resnet():
    # z+ on the signed, normalised image (the old default) gives relevance of both signs at the
    # input and denominators that cross zero; with the image replaced by ones (official code)
    # every input relevance is a sum of w+ R / z+ >= 0 terms.
    model = MODELS.get("sb_resnet").obj().eval()
    from saliencybench.datasets.synthetic import synthetic

    ds = synthetic(split="test", n_samples=4)
    entry = METHODS.get("lrp_resnet")
    res = lrp_relevance(model, ds.x, ds.y, config=LRPConfig(**entry.meta["defaults"]))
    assert float(res.relevance.min()) >= 0
    err = ((res.checkpoints["input"] - res.initial.double()).abs() / res.initial.double()).max()
    assert float(err) < 1e-5
