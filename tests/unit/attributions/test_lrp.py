"""LRP for ResNet (Otsuki et al. 2024) and the LRP rule family: conservation, splitting,
quantization, linearity, agreement with zennit, registry variants."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn

from saliencybench.attributions.base import compute_attribution
from saliencybench.attributions.lrp import (
    LRPUnsupportedModel,
    lrp,
    lrp_relevance,
    lrp_resnet_with_checkpoints,
    trace_model,
)
from saliencybench.attributions.lrp.canonizers import RatioSplit, SymmetricSplit
from saliencybench.attributions.lrp.rules import ZPlus
from saliencybench.attributions.postprocess import heat_quantize
from saliencybench.core.registry import METHODS, MODELS

BLOCK_TYPES = (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so BN is far from the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model


@functools.lru_cache(maxsize=None)
def _resnet(name: str, dtype: torch.dtype) -> nn.Module:
    """Random-init torchvision ResNet with randomised BN (cached: tests never mutate it)."""
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)(weights=None, num_classes=10)
    return randomize_bn(m).eval().to(dtype)


def _expected_sum(key: str, sums: dict, blocks: list[str], p: torch.Tensor) -> torch.Tensor:
    """What the relevance sum at ``key`` must equal: p outside blocks, the split share inside."""
    for b in blocks:
        if key.startswith(b + ".downsample") or key in (f"{b}.split.skip", f"{b}.skip.in"):
            return sums[f"{b}.split.skip"]
        if key.startswith(b + ".") and key not in (f"{b}.out", f"{b}.in"):
            return sums[f"{b}.split.main"]
    return p


def _worst_layer_error(model: nn.Module, x: torch.Tensor, t: torch.Tensor, **kw) -> float:
    res = lrp_relevance(model, x, t, record_sums=True, **kw)
    p = res.initial.double()
    blocks = [n.name for n in trace_model(model) if n.kind == "block"]
    assert blocks, "test model has no residual blocks"
    # every block contributes out / split / branch-input sums
    assert all(f"{b}.split.skip" in res.layer_sums and f"{b}.main.in" in res.layer_sums for b in blocks)
    worst = 0.0
    for key, s in res.layer_sums.items():
        ref = _expected_sum(key, res.layer_sums, blocks, p)
        worst = max(worst, float(((s - ref).abs() / p.abs()).max()))
    # the Otsuki et al. 2024 §5.5 checkpoints agree with p too
    for k in ("input", "first_block", "last_block"):
        worst = max(worst, float(((res.checkpoints[k] - p).abs() / p.abs()).max()))
    return worst


# ---------------------------------------------------------------------------- conservation
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", [
    dict(split="ratio", include_identity=True),
    dict(split="symmetric", include_identity=True),
    dict(split="ratio", include_identity=False),
    dict(split="symmetric", include_identity=False),
])
def test_lrp_resnet18_conserves_at_every_layer_and_branch(dtype, variant):
    model = _resnet("resnet18", dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g).to(dtype)
    t = torch.tensor([3, 7])
    # float32 reaches ~1e-7 here (measured), float64 ~1e-15
    assert _worst_layer_error(model, x, t, **variant) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lrp_resnet50_conserves_at_every_layer_and_branch(dtype):
    model = _resnet("resnet50", dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g).to(dtype)
    t = torch.tensor([1, 5])
    assert _worst_layer_error(model, x, t, split="ratio", include_identity=True) < 1e-5


def test_lrp_resnet_on_zoo_resnet_conserves():
    if "sb_resnet" not in MODELS:
        pytest.skip("zoo model sb_resnet not registered yet")
    model = randomize_bn(MODELS.get("sb_resnet").obj(pretrained=False)).eval().double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    assert _worst_layer_error(model, x, torch.tensor([0, 1])) < 1e-5


def test_checkpoints_match_probability_and_raw_map():
    model = _resnet("resnet18", torch.float64)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    amap, sums, p = lrp_resnet_with_checkpoints(model, x, t)
    probs = torch.softmax(model(x), 1)[torch.arange(3), t]
    assert torch.allclose(p, probs.detach(), rtol=1e-12)
    assert amap.shape == (3, 1, 32, 32)
    assert torch.allclose(amap.sum((1, 2, 3)), p, rtol=1e-10)
    for k in ("input", "first_block", "last_block"):
        assert torch.allclose(sums[k], p.double(), rtol=1e-10)


def test_zero_denominator_fallback_keeps_conservation_without_nan():
    # relevance on an output whose z+ is 0 (all inputs of the receptive field are 0):
    # Otsuki et al. 2024 leave it undefined; our flat fallback keeps it and produces no NaN.
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    h = torch.rand(1, 2, 6, 6, dtype=torch.float64)
    h[..., :3, :3] = 0.0
    r_out = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    r_in = ZPlus().relevance(conv, h, r_out)
    assert torch.isfinite(r_in).all()
    assert torch.allclose(r_in.sum(), r_out.sum(), rtol=1e-12)


# ---------------------------------------------------------------------------- splitting
def test_ratio_split_sums_to_input_and_fraction_in_unit_interval():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4, 8, 5, 5, generator=g, dtype=torch.float64)
    hs = torch.randn(4, 8, 5, 5, generator=g, dtype=torch.float64)
    hm = torch.randn(4, 8, 5, 5, generator=g, dtype=torch.float64)
    hs[0, 0] = 0.0
    hm[0, 0] = 0.0  # both branches zero: stabiliser halves, never NaN
    rs, rm = RatioSplit()(r, hs, hm)
    assert torch.isfinite(rs).all() and torch.isfinite(rm).all()
    assert torch.allclose(rs + rm, r, rtol=0, atol=1e-15)
    frac = rs / r
    assert (frac >= 0).all() and (frac <= 1).all()
    # Eq. 5 itself
    expect = r * hs.abs() / (hs.abs() + hm.abs())
    ok = (hs.abs() + hm.abs()) > 0
    assert torch.allclose(rs[ok], expect[ok], rtol=1e-12)
    assert torch.allclose(rs[0, 0], r[0, 0] / 2)


def test_symmetric_split_halves():
    r = torch.randn(2, 3, 4, 4)
    rs, rm = SymmetricSplit()(r, torch.randn_like(r), torch.randn_like(r))
    assert torch.equal(rs, r * 0.5) and torch.allclose(rs + rm, r)


def test_identity_vs_projection_paths():
    model = _resnet("resnet18", torch.float64)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([0, 1])
    nodes = trace_model(model)
    blocks = [n for n in nodes if n.kind == "block"]
    identity = [b.name for b in blocks if b.skip is None]
    projection = [b.name for b in blocks if b.skip is not None]
    assert identity == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert projection == ["layer2.0", "layer3.0", "layer4.0"]
    off = lrp_relevance(model, x, t, include_identity=False, record_sums=True).layer_sums
    on = lrp_relevance(model, x, t, include_identity=True, record_sums=True).layer_sums
    for b in identity:  # "Include identical" off: nothing through identity skips
        assert torch.all(off[f"{b}.skip.in"] == 0)
        assert torch.allclose(off[f"{b}.main.in"], off[f"{b}.out"], rtol=1e-12)
        assert torch.all(on[f"{b}.skip.in"].abs() > 0)
    for b in projection:  # projection skips always propagate with z+
        for sums in (on, off):
            assert torch.all(sums[f"{b}.skip.in"].abs() > 0)
            assert torch.allclose(sums[f"{b}.skip.in"], sums[f"{b}.split.skip"], rtol=1e-10)


# ---------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("q", [2, 4, 8])
def test_heat_quantization_levels_and_floor_formula(q):
    g = torch.Generator().manual_seed(q)
    a = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64)
    out = heat_quantize(a, q)
    for i in range(3):
        assert out[i].unique().numel() <= q
        lo, hi = a[i].min(), a[i].max()
        step = (hi - lo) / (q - 1)  # authors' code: step (max-min)/(Q-1), Eq. 8's "min +" offset
        level = torch.floor((a[i] - lo) / step).clamp(0, q - 1)
        assert torch.equal(out[i], lo + level * step)
        assert torch.isclose(out[i].max(), hi) and out[i].min() == lo
        # a quantized value never exceeds the raw one and lies less than a step below it
        assert (out[i] <= a[i] + 1e-12).all() and (a[i] - out[i] < step + 1e-12).all()
        # monotone: the pixel order (ties aside) is the raw order, so Insertion / Deletion
        # rank pixels by level
        order = a[i].flatten().argsort()
        assert (out[i].flatten()[order].diff() >= 0).all()
    const = torch.full((1, 1, 4, 4), 2.5, dtype=torch.float64)
    assert torch.equal(heat_quantize(const, q), const)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_heat_quantization_puts_the_maximum_on_the_top_level(dtype):
    """(max - min) / step rounds to just below Q - 1 for ~8% of random maps; floor() then left
    the maximum one level down (found as a batch-vs-single difference of lrp_resnet)."""
    g = torch.Generator().manual_seed(0)
    scales = 10.0 ** torch.randint(-20, 20, (500, 1, 1, 1), generator=g).to(dtype)
    a = torch.randn(500, 1, 8, 8, generator=g, dtype=dtype) * scales
    out = heat_quantize(a, 8)
    lo, hi = a.flatten(1).min(1).values, a.flatten(1).max(1).values
    top = lo + 7 * ((hi - lo) / 7)
    assert torch.equal(out.flatten(1).max(1).values, top)
    argmax = a.flatten(1).argmax(1)
    assert torch.equal(out.flatten(1).gather(1, argmax[:, None]).squeeze(1), top)


def test_lrp_resnet_registry_applies_quantization():
    model = _resnet("resnet18", torch.float32)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([0, 1])
    q = compute_attribution("lrp_resnet", model, x, t)
    raw = compute_attribution("lrp_resnet_noquant", model, x, t)
    assert q.shape == raw.shape == (2, 1, 32, 32)
    assert all(q[i].unique().numel() <= 8 for i in range(2))
    assert torch.equal(q, heat_quantize(raw, 8))


# ---------------------------------------------------------------------------- linearity
def test_attribution_is_linear_in_initial_relevance():
    model = _resnet("resnet18", torch.float64)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([4, 2])
    # unit_pass=False: the pass itself runs at the given scale, so this tests the rules
    r1 = lrp_relevance(model, x, t, initial_relevance=torch.tensor([1.0, 1.0]), unit_pass=False).relevance
    r2 = lrp_relevance(model, x, t, initial_relevance=torch.tensor([2.5, -0.3]), unit_pass=False).relevance
    # Linear up to rounding. The first conv applies Eq. 2 (W+ x) to the signed normalised
    # image, where W+ x can come close to 0, so rounding is amplified there (~1e-8 of the
    # map's scale measured in float64 for a negative factor); hence a scale-relative bound.
    scale = r1.abs().max()
    assert (r2[0] - 2.5 * r1[0]).abs().max() < 1e-7 * scale
    assert (r2[1] + 0.3 * r1[1]).abs().max() < 1e-7 * scale
    assert torch.allclose(r2.sum((1, 2, 3)), torch.tensor([2.5, -0.3], dtype=torch.float64), rtol=1e-7)


@pytest.mark.parametrize("method", ["lrp_epsilon", "lrp_zplus", "lrp_resnet", "lrp_resnet_symmetric",
                                    "lrp_resnet_ratio_noidentity", "lrp_resnet_mixture"])
def test_unit_pass_equals_the_pass_at_the_initial_scale(method):
    """The default unit pass (relevance 1 at the target, scaled back afterwards) gives the map,
    checkpoints and per-node sums of the pass run at the initial relevance's own scale."""
    model = _resnet("resnet18", torch.float64)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([4, 2])
    params = {k: v for k, v in METHODS.get(method).meta["defaults"].items() if k not in ("postprocess", "quantize")}
    a = lrp_relevance(model, x, t, record_sums=True, unit_pass=True, **params)
    b = lrp_relevance(model, x, t, record_sums=True, unit_pass=False, **params)
    scale = b.relevance.abs().max()
    assert (a.relevance - b.relevance).abs().max() <= 1e-9 * scale
    for k in b.checkpoints:
        torch.testing.assert_close(a.checkpoints[k], b.checkpoints[k], rtol=1e-9, atol=0, equal_nan=True)
    assert a.layer_sums.keys() == b.layer_sums.keys()
    for k in b.layer_sums:
        torch.testing.assert_close(a.layer_sums[k], b.layer_sums[k], rtol=1e-8,
                                   atol=1e-12 * float(b.initial.abs().max()))


def test_tiny_probability_keeps_the_pass_out_of_subnormals():
    """A target with softmax probability ~1e-30 (untrained nets, wrong targets): the map is the
    unit map times p, with full float32 precision, and no propagated value is subnormal."""
    model = _resnet("resnet18", torch.float32)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([4, 2])
    p = torch.tensor([1e-30, 3e-36])
    unit = lrp_relevance(model, x, t, initial_relevance=torch.ones(2), rule="zplus").relevance
    got = lrp_relevance(model, x, t, initial_relevance=p, rule="zplus").relevance
    torch.testing.assert_close(got, unit * p.view(-1, 1, 1, 1), rtol=1e-6, atol=0)
    old = lrp_relevance(model, x, t, initial_relevance=p, rule="zplus", unit_pass=False).relevance
    tiny = torch.finfo(torch.float32).tiny
    assert ((old != 0) & (old.abs() < tiny)).any()  # the direct pass does reach subnormals


def test_batch_equals_single_samples():
    model = _resnet("resnet18", torch.float64)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([4, 2, 9])
    batch = lrp(model, x, t)
    single = torch.cat([lrp(model, x[i:i + 1], t[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch, single, rtol=1e-10, atol=1e-16)


# ---------------------------------------------------------------------------- zennit
def _zennit(model, x, t, rule, canonizers=()):
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, ZPlus
    from zennit.types import Convolution

    hook = Epsilon() if rule == "epsilon" else ZPlus(zero_params=["bias"])
    comp = LayerMapComposite(layer_map_base() + [(Convolution, hook), (nn.Linear, hook)],
                             canonizers=list(canonizers))
    onehot = torch.eye(10, dtype=x.dtype)[t]
    with Gradient(model=model, composite=comp) as attributor:
        _, rel = attributor(x, onehot)
    return rel.detach()


@pytest.mark.parametrize("method,rule", [("lrp_epsilon", "epsilon"), ("lrp_zplus", "zplus")])
def test_matches_zennit_on_vgg11_float64(method, rule):
    # VGG11 without BN (BN models: test_matches_zennit_with_bn_canonizer_float64). Composite: zennit's
    # layer_map_base (Norm on AvgPool, Pass on ReLU) + Epsilon / ZPlus(zero bias) on conv and
    # linear. Our epsilon keeps the bias in z, our z+ drops it, as these zennit rules do. Max
    # pooling: zennit passes the gradient, our z-rule gives the same (R to the arg-max). The
    # residual difference is float64 rounding (~1e-15 measured).
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=10).eval().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([1, 4])
    entry = METHODS.get(method)
    ours = entry.obj(model, x, t, **entry.meta["defaults"])  # raw float64 relevance
    # ours starts from the target logit, zennit from 1: scale
    logit = model(x)[torch.arange(2), t].detach().view(-1, 1, 1, 1)
    theirs = _zennit(model, x, t, rule) * logit
    err = (ours - theirs).abs().max() / theirs.abs().max()
    assert err < 1e-4
    assert err < 1e-10  # in fact equal up to rounding


@pytest.mark.parametrize("method,rule", [("lrp_epsilon", "epsilon"), ("lrp_zplus", "zplus")])
@pytest.mark.parametrize("arch", ["vgg11_bn", "resnet18"])
def test_matches_zennit_with_bn_canonizer_float64(method, rule, arch):
    # BN models: the plain LRP rules fold each eval-mode BN into the conv before it (our
    # ``canonize_bn``), as zennit's canonizers do (SequentialMergeBatchNorm for VGG,
    # ResNetCanonizer for ResNet, which also turns the residual add into a ``Sum`` module that
    # layer_map_base gives the Norm rule: our "signed" split). BN statistics are randomised so
    # the fold is far from the identity. Without the fold, epsilon on the bias-free conv and an
    # unchanged pass through BN divides by the pre-BN output and explodes where it is near 0.
    from zennit.torchvision import ResNetCanonizer, SequentialMergeBatchNorm

    torch.manual_seed(0)
    model = randomize_bn(getattr(torchvision.models, arch)(weights=None, num_classes=10)).eval().double()
    # zennit's canonizer leaves each BN as x / sqrt(1 + bn.eps) rather than the identity (it
    # resets mean / var / affine, not eps), which moves epsilon-rule maps by up to ~1e-2 relative
    # on this model; with eps = 0 its canonized model is exactly the original one
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([1, 4])
    entry = METHODS.get(method)
    ours = entry.obj(model, x, t, **entry.meta["defaults"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    logit = model(x)[torch.arange(2), t].detach().view(-1, 1, 1, 1)
    canon = ResNetCanonizer() if arch.startswith("resnet") else SequentialMergeBatchNorm()
    theirs = _zennit(model, x, t, rule, [canon]) * logit
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    # measured: float64 rounding (stabilisers: both eps=1e-6 on the same folded z)
    assert err < 1e-4, err
    assert err < 1e-10, err


def test_bn_fold_keeps_plain_epsilon_finite_on_the_zoo_resnet():
    # sb_resnet's convs have no bias and BN follows each one. Passing relevance unchanged
    # through BN while the epsilon rule divides by the pre-BN conv output blew the input sum up
    # to ~1e8 x the logit (measured median 3.6e8 on these 16 samples); folded as zennit does,
    # the error is what the folded biases absorb (measured median 0.85, max 1.39)
    model = MODELS.get("sb_resnet").obj().eval()
    from saliencybench.core.registry import DATASETS

    ds = DATASETS.get("synthetic").obj(n_samples=16, split="test")
    kw = dict(rule="epsilon", split="signed", init="logit", epsilon=1e-6, stabilizer=1e-6,
              zplus_mode="alpha1beta0")

    def err(canonize_bn):
        r = lrp_relevance(model, ds.x, ds.y, canonize_bn=canonize_bn, **kw)
        return ((r.checkpoints["input"] - r.initial.double()).abs() / r.initial.double().abs()).median()

    folded, unfolded = float(err(True)), float(err(False))
    assert folded < 2.0 and unfolded > 1e3 * folded
    # LRP for ResNet with the rule mixture folds BN only under its epsilon layers (z+ keeps
    # Otsuki et al. 2024's BN pass-through): with the switch after block 3 of 6, measured median error 0.66
    # folded against 11 (max 8e3) unfolded
    mix = {**METHODS.get("lrp_resnet_mixture").meta["defaults"], "switch_block": 3}
    assert mix["canonize_bn"] == "epsilon"

    def mix_err(canonize_bn):
        r = lrp_relevance(model, ds.x, ds.y, **{**mix, "canonize_bn": canonize_bn})
        return float(((r.checkpoints["input"] - r.initial.double()).abs() / r.initial.double()).median())

    assert mix_err("epsilon") < 2.0 < 5 * 2.0 < mix_err(False)
    with pytest.raises(ValueError, match="canonize_bn"):
        lrp_relevance(model, ds.x[:1], ds.y[:1], canonize_bn="zplus")
    assert METHODS.get("lrp_epsilon").meta["defaults"]["canonize_bn"] is True
    assert "canonize_bn" not in METHODS.get("lrp_resnet").meta["defaults"]  # Otsuki et al. 2024: BN passes R


# ---------------------------------------------------------------------------- registry / guard
def test_registered_variants_share_one_implementation():
    names = ["lrp_resnet", "lrp_resnet_noquant", "lrp_resnet_ratio_noidentity",
             "lrp_resnet_symmetric", "lrp_resnet_symmetric_noidentity", "lrp_resnet_mixture",
             "lrp_epsilon", "lrp_zplus", "lrp_alpha1beta0", "lrp_mixture"]
    entries = [METHODS.get(n) for n in names]
    # one engine: the six lrp_resnet* entries share the ResNet-checking wrapper of lrp()
    assert len({id(e.obj) for e in entries[:6]}) == 1 and len({id(e.obj) for e in entries[6:]}) == 1
    from saliencybench.attributions.lrp import lrp, lrp_for_resnet
    assert entries[0].obj is lrp_for_resnet and entries[6].obj is lrp
    assert all(e.meta["conservation"] == "lrp" and e.meta["description"] for e in entries)
    d = {e.name: e.meta["defaults"] for e in entries}
    assert d["lrp_resnet"]["split"] == "ratio" and d["lrp_resnet"]["include_identity"]
    assert d["lrp_resnet_symmetric_noidentity"] == {**d["lrp_resnet"], "split": "symmetric", "include_identity": False}
    assert METHODS.get("lrp_resnet").meta["postprocess"] == ("sum", "quantize:8")


def test_lrp_resnet_is_not_applicable_without_residual_blocks(tiny_cnn, tiny_batch):
    from saliencybench.core.errors import NotApplicableError

    x, y = tiny_batch
    with pytest.raises(NotApplicableError, match="residual blocks"):
        compute_attribution("lrp_resnet", tiny_cnn, x, y)
    assert not any(m._forward_hooks or m._backward_hooks for m in tiny_cnn.modules())


@pytest.mark.parametrize("name", ["lrp_epsilon", "lrp_zplus", "lrp_mixture"])
def test_runs_on_tiny_cnn_and_leaves_model_unchanged(name, tiny_cnn, tiny_batch):
    x, y = tiny_batch
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    out = compute_attribution(name, tiny_cnn, x, y)
    assert out.shape == (4, 1, 32, 32) and torch.isfinite(out).all()
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())
    assert not any(m._forward_hooks or m._backward_hooks for m in tiny_cnn.modules())


def test_mixture_switches_rule_after_block_eight():
    model = _resnet("resnet50", torch.float64)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    t = torch.tensor([3])
    mix = lrp(model, x, t, rule="mixture", switch_block=8)
    zp = lrp(model, x, t, rule="zplus")
    all_eps = lrp(model, x, t, rule="mixture", switch_block=0, stabilizer=1e-6)  # pools as epsilon
    eps = lrp(model, x, t, rule="epsilon")
    assert not torch.allclose(mix, zp)
    assert torch.allclose(all_eps, eps, rtol=1e-12, atol=1e-20)


def test_unsupported_model_raises_clearly():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.Tanh()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.act(self.conv(x)).mean((2, 3)))

    with pytest.raises(LRPUnsupportedModel, match="Tanh"):
        lrp(Odd().eval(), torch.randn(1, 3, 8, 8), torch.tensor([0]))


# ---------------------------------------------------------------------------- composable rules
def test_a_hand_built_composite_equals_the_registered_one():
    """A composite is rules by layer: lrp_resnet's (z+, w+ first layer, ratio split) built by
    hand gives the registered method's relevance bit for bit."""
    from saliencybench.attributions.lrp import Composite, LRPConfig
    from saliencybench.attributions.lrp.canonizers import ResidualSplit
    from saliencybench.attributions.lrp.rules import WPlus

    model = _resnet("resnet18", torch.float64)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1])
    cfg = LRPConfig(**METHODS.get("lrp_resnet").meta["defaults"])
    hand = Composite(default=ZPlus(), first=WPlus(), split=ResidualSplit(RatioSplit()))
    ours = lrp_relevance(model, x, t, config=cfg, composite=hand).relevance
    assert torch.equal(ours, lrp_relevance(model, x, t, config=cfg).relevance)


def test_a_new_rule_is_one_class():
    """A rule subclass plugs into a composite without touching the engine: z+ with every
    relevance halved scales the map by 1/2 per linear layer (every rule is linear in R)."""
    from saliencybench.attributions.lrp import Composite
    from saliencybench.attributions.lrp.rules import Rule

    class HalfZPlus(Rule):
        def relevance(self, module, h, r_out, z_forward=None):
            return ZPlus().relevance(module, h, r_out) * 0.5

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).double().eval()
    x = torch.rand(1, 3, 14, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([3])
    base = lrp_relevance(model, x, t, composite=Composite(default=ZPlus())).relevance
    half = lrp_relevance(model, x, t, composite=Composite(default=HalfZPlus())).relevance
    n_linear = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert torch.allclose(half, base * 0.5 ** n_linear, rtol=1e-9, atol=0)


def test_a_composite_by_layer_type_equals_the_mixture_without_blocks():
    """Without residual blocks the rule mixture is epsilon on the fully connected layers and z+
    elsewhere: the same as a composite keyed by layer type."""
    from saliencybench.attributions.lrp import Composite
    from saliencybench.attributions.lrp.composites import of_type
    from saliencybench.attributions.lrp.rules import Epsilon

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 6 * 6, 8),
                          nn.ReLU(), nn.Linear(8, 5)).double().eval()
    x = torch.rand(2, 3, 14, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 4])
    by_type = Composite(default=ZPlus(), layers=((of_type(nn.Linear), Epsilon(1e-6)),))
    ours = lrp_relevance(model, x, t, composite=by_type).relevance
    assert torch.equal(ours, lrp_relevance(model, x, t, rule="mixture").relevance)
