"""GridPG / DiFull / DiPart model wrappers (saliencybench.models.grid_settings)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from helpers.models import SmallRFNet
from saliencybench.core.modules import capture_activation
from saliencybench.metrics.localization import localization_score
from saliencybench.models.grid_settings import (
    GridSetting,
    cell_masks,
    cells_to_grid,
    default_layers,
    grid_to_cells,
    split_backbone_head,
)


class VGGLike(nn.Module):
    """features / avgpool(2x2) / classifier with biases, like a small VGG head."""

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, k))
        self.sb_layers = {"input": None, "middle": "features.1", "final": "features.4", "cam": "features.4"}

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class FirstConvOnlyNet(nn.Module):
    """Only the first conv has spatial extent (3x3, zero padding); the rest is 1x1 / aligned
    pooling, so a cell's features in a grid whose other cells are zero equal the features of
    the cell image alone: the receptive field "allows" exact GridPG equality."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 1), nn.ReLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, k)
        self.sb_layers = {"input": None, "middle": "features.1", "final": "features.4", "cam": "features.4"}

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def small_resnet(k: int = 5) -> nn.Module:
    """torchvision ResNet naming (Bottleneck blocks, BN, projection skips), one block per stage."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=k).eval()


def _gxi(model, x, target):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return (x.grad * x).sum(1, keepdim=True), x.grad


@pytest.fixture
def rf_net():
    torch.manual_seed(0)
    return SmallRFNet().eval()


def test_grid_cells_roundtrip():
    x = torch.randn(3, 2, 12, 12)
    cells = grid_to_cells(x, 3)
    assert cells.shape == (27, 2, 4, 4)
    assert torch.equal(cells[1 * 9 + 5], x[1, :, 4:8, 8:12])  # grid 1, cell (1, 2)
    assert torch.equal(cells_to_grid(cells, 3), x)


def test_split_and_default_layers():
    r18 = torchvision.models.resnet18(weights=None, num_classes=4)
    assert split_backbone_head(r18)[1] == ["avgpool", "fc"]
    assert default_layers(r18) == {"input": None, "middle": "layer2", "final": "layer4", "cam": "layer4"}
    from torchvision.models.vgg import cfgs, make_layers

    def vgg_like(bn):  # torchvision VGG11 naming without building its 100M-parameter head
        m = nn.Module()
        m.features = make_layers(cfgs["A"], batch_norm=bn)
        m.avgpool = nn.AdaptiveAvgPool2d(7)
        m.classifier = nn.Linear(1, 1)
        return m

    assert split_backbone_head(vgg_like(False)) == (["features"], ["avgpool", "classifier"])
    # VGG11: ReLU after conv5 and conv8 (Rao et al. 2022, official code)
    assert default_layers(vgg_like(False))["middle"] == "features.12"
    assert default_layers(vgg_like(False))["final"] == "features.19"
    assert default_layers(vgg_like(True))["final"] == "features.27"

    class NoPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

    with pytest.raises(ValueError, match="sb_grid_split"):
        split_backbone_head(NoPool())


def test_gridpg_logit_map_equals_single_image_logits():
    """Tolerance 1e-5 abs: a single image in one cell, zeros (= the conv padding value)
    elsewhere; the classifier window aligned with that cell sees exactly the features of the
    image alone, because only the first layer has spatial extent."""
    torch.manual_seed(0)
    rf_net = FirstConvOnlyNet().eval()
    k = 5
    single = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ref = rf_net(single)
    w = GridSetting(rf_net, "gridpg", 2, cell_size=(16, 16)).eval()
    aligned = GridSetting(rf_net, "gridpg", 2, head="aligned", cell_size=(16, 16)).eval()
    for cell in range(4):
        grid = torch.zeros(4, 3, 32, 32)
        r, c = divmod(cell, 2)
        grid[:, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = single
        with torch.no_grad():
            lm = w.logit_map(grid)  # (B, K, 9, 9): d = 8, P = (n-1)d + 1
            out_al = aligned(grid).view(4, 4, k)
            out_gl = w(grid).view(4, 4, k)
        assert lm.shape == (4, k, 9, 9)
        torch.testing.assert_close(lm[:, :, r * 8, c * 8], ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(out_al[:, cell], ref, atol=1e-5, rtol=0)
        # the paper's single head: a GAP head pools the whole composite, = model(grid)
        torch.testing.assert_close(out_gl[:, 0], rf_net(grid), atol=1e-6, rtol=0)
        assert torch.equal(out_gl[:, 0], out_gl[:, 3])


def test_gridpg_vgg_head_slides_over_windows():
    torch.manual_seed(0)
    m = VGGLike().eval()
    x = torch.randn(2, 3, 32, 32)
    w = GridSetting(m, "gridpg", 2, cell_size=(16, 16))
    lm = w.logit_map(x)  # final map 8x8, d = 4 -> 5x5 windows
    assert lm.shape == (2, 4, 5, 5)
    f = m.features(x)
    win = f[:, :, 1:5, 2:6]
    expect = m.classifier(torch.flatten(m.avgpool(win), 1))
    torch.testing.assert_close(lm[:, :, 1, 2], expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["small", "resnet"])
def test_difull_zero_gradient_outside_scored_cell(arch):
    torch.manual_seed(0)
    m = SmallRFNet().eval() if arch == "small" else small_resnet()
    n, k = 2, 5
    w = GridSetting(m, "difull", n, cell_size=(32, 32)).eval()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cells = torch.tensor([0, 3, 1, 2])
    target = cells * k + torch.tensor([1, 2, 3, 4])
    attr, grad = _gxi(w, x, target)
    masks = cell_masks((64, 64), n)[cells]
    assert torch.all(grad * (1 - masks) == 0)  # exactly zero, not just small
    assert torch.all((grad * masks).flatten(1).abs().sum(1) > 0)
    # saliency (|grad|) and IxG both localize perfectly (Rao et al. 2022, supp. §A)
    assert torch.equal(localization_score(grad.abs().sum(1, keepdim=True), masks), torch.ones(4))
    score = localization_score(attr, masks)
    assert torch.all((score == 1.0) | ((attr * masks).clamp(min=0).sum((1, 2, 3)) == 0))


def test_difull_cell_logits_equal_base_model_and_layers_are_grid_shaped():
    torch.manual_seed(0)
    m = small_resnet()
    w = GridSetting(m, "difull", 2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = w(x).view(2, 4, 5)
        for cell in range(4):
            r, c = divmod(cell, 2)
            torch.testing.assert_close(out[:, cell], m(x[:, :, r * 32:(r + 1) * 32, c * 32:(c + 1) * 32]),
                                       atol=1e-5, rtol=1e-5)
    assert w.sb_layers["middle"] == "backbone.layer2"
    for setting in ("gridpg", "difull", "dipart"):
        ws = GridSetting(m, setting, 2)
        with capture_activation(ws, ws.sb_layers["final"]) as store, torch.no_grad():
            ws(x)
        assert store["out"].shape == (2, 2048, 2, 2)  # 32-px cells -> 1x1 each
    assert "backbone.layer2.0" in w.valid_layers()
    assert not any(".inner" in n for n in w.valid_layers())


def test_difull_layer_attribution_localizes_perfectly():
    """Gradient x activation at the middle layer of DiFull stays in the scored cell."""
    torch.manual_seed(0)
    m = SmallRFNet().eval()
    w = GridSetting(m, "difull", 2)
    x = torch.randn(3, 3, 32, 32)
    target = torch.tensor([0, 3, 0]) * 5 + torch.tensor([1, 0, 4])
    with capture_activation(w, w.sb_layers["middle"]) as store:
        w(x).gather(1, target[:, None]).sum().backward()
    act = store["out"]
    layer_map = (act.grad * act).sum(1, keepdim=True).abs()
    up = torch.nn.functional.interpolate(layer_map, size=(32, 32), mode="bilinear", align_corners=False)
    masks = cell_masks((32, 32), 2)[torch.tensor([0, 3, 0])]
    assert torch.equal(localization_score(up, masks), torch.ones(3))


def test_dipart_equals_aligned_gridpg_and_crops_features(rf_net):
    x = torch.randn(2, 3, 32, 32)
    dp = GridSetting(rf_net, "dipart", 2)
    al = GridSetting(rf_net, "gridpg", 2, head="aligned")
    with torch.no_grad():
        out = dp(x)
        torch.testing.assert_close(out, al(x), atol=1e-5, rtol=1e-5)
        f = rf_net.features(x)
        expect = rf_net.fc(f[:, :, 8:, :8].mean((2, 3)))  # cell 2 = bottom-left
    torch.testing.assert_close(out.view(2, 4, 5)[:, 2], expect, atol=1e-5, rtol=1e-5)


def test_wrapper_leaves_base_model_unchanged(rf_net):
    x = torch.randn(2, 3, 16, 16)
    before = rf_net(x).detach()
    state = {k: v.clone() for k, v in rf_net.state_dict().items()}
    for s in ("gridpg", "difull", "dipart"):
        w = GridSetting(rf_net, s, 2)
        w(torch.randn(1, 3, 32, 32)).sum().backward()
    rf_net.zero_grad(set_to_none=True)
    assert torch.equal(rf_net(x), before)
    assert all(torch.equal(v, state[k]) for k, v in rf_net.state_dict().items())
    assert not any(m._forward_hooks for m in rf_net.modules())
    assert not rf_net.training


def test_bad_split_is_detected():
    class Odd(nn.Module):  # children registered out of forward order
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.features = nn.Conv2d(3, 4, 3, padding=1)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.sb_layers = {"middle": "features", "final": "features"}

        def forward(self, x):
            return self.fc(self.avgpool(self.features(x)).flatten(1))

    with pytest.raises(ValueError):
        GridSetting(Odd().eval(), "dipart", 2, cell_size=(8, 8))


@pytest.mark.parametrize("method,params", [
    ("saliency", {}), ("ixg", {}), ("guided_backprop", {}), ("integrated_gradients", {"steps": 4}),
    ("ixg", {"layer": "middle"}),
])
def test_difull_registered_gradient_methods_localize_exactly(method, params):
    """Rao et al. 2022, supp. §A: on DiFull, gradient methods give exactly 1.0 (through compute_attribution).
    ``middle`` here is a full-resolution layer, so no upsampling is involved."""
    from saliencybench.attributions.base import compute_attribution

    torch.manual_seed(0)
    w = GridSetting(SmallRFNet().eval(), "difull", 2)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cells = torch.tensor([0, 3, 0, 3])
    maps = compute_attribution(method, w, x, cells * 5 + torch.tensor([0, 1, 2, 3]), params=params)
    masks = cell_masks((32, 32), 2)[cells]
    assert maps.shape == (4, 1, 32, 32)
    outside = (maps.clamp(min=0) * (1 - masks)).flatten(1).sum(1)
    assert torch.all(outside == 0)
    score = localization_score(maps, masks)
    assert torch.all((score == 1.0) | ((maps * masks).clamp(min=0).flatten(1).sum(1) <= 1e-7))


def test_difull_low_resolution_layer_leaks_only_through_bilinear_upsampling():
    """At a half-resolution layer the layer map itself is zero outside the cell, but the
    bilinear upsampling (the benchmark's convention; also Rao et al.'s code) spreads it one pixel into the
    neighbours."""
    from saliencybench.attributions.base import compute_attribution

    torch.manual_seed(0)
    w = GridSetting(SmallRFNet().eval(), "difull", 2)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cells = torch.tensor([0, 3, 0, 3])
    maps = compute_attribution("saliency", w, x, cells * 5, params={"layer": "final"})
    masks = cell_masks((32, 32), 2)[cells]
    band = torch.nn.functional.max_pool2d(masks, 3, stride=1, padding=1)  # cell + 1 px
    assert torch.all(maps.clamp(min=0) * (1 - band) == 0)
    assert torch.all(localization_score(maps, masks) > 0.9)


@pytest.mark.parametrize("setting", ["gridpg", "difull", "dipart"])
def test_layer_occlusion_runs_in_every_setting(setting):
    """Occlusion at a layer swaps in a bigger batch of activations than the input batch."""
    from saliencybench.attributions.base import compute_attribution

    torch.manual_seed(0)
    w = GridSetting(SmallRFNet().eval(), setting, 2)
    x = torch.randn(2, 3, 32, 32)
    params = {"layer": "final", "window": 3, "stride": 2}
    maps = compute_attribution("occlusion", w, x, torch.tensor([1, 5 + 2]), params=params)
    assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all()


def _zoo_resnet():
    from saliencybench.core.registry import MODELS

    return MODELS.get("sb_resnet").obj()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "sb_resnet", "inception_v3"])
def test_gridpg_global_pool_head_is_the_model_on_the_whole_grid(arch):
    """Rao et al. 2022 §3.1 / official code: with a global-pooling head the GridPG logits are
    ``model(grid)`` (GAP over the whole composite), not the mean of a GAP+fc slid over
    cell-sized windows (which weights the centre of the composite ~3x)."""
    torch.manual_seed(0)
    if arch == "sb_resnet":
        m, size, k = _zoo_resnet(), 128, None
    elif arch == "inception_v3":  # AuxLogits stays out of the chain; transform_input is kept
        m = torchvision.models.inception_v3(weights=None, num_classes=6, init_weights=False,
                                            transform_input=True).eval()
        size = 160
    else:
        k = 6
        m = getattr(torchvision.models, arch)(weights=None, num_classes=k).eval()
        size = 64
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    w = GridSetting(m, "gridpg", 2, cell_size=(size // 2, size // 2)).eval()
    assert w.classifier_mode == "pool"
    with torch.no_grad():
        out = w(x)
        ref = m(x)
    k = ref.shape[1]
    assert out.shape == (2, 4 * k)
    for cell in range(4):
        torch.testing.assert_close(out[:, cell * k:(cell + 1) * k], ref, atol=1e-5, rtol=1e-5)


def test_gridpg_vgg_fixed_size_head_still_slides():
    torch.manual_seed(0)
    m = VGGLike().eval()
    w = GridSetting(m, "gridpg", 2, cell_size=(16, 16))
    assert w.classifier_mode == "slide"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(w(x)[:, :4], w.logit_map(x).mean((2, 3)))
    forced = GridSetting(_zoo_resnet(), "gridpg", 2, classifier="slide")
    assert forced.classifier_mode == "slide"


@pytest.mark.parametrize("setting", ["difull", "dipart"])
def test_probabilities_are_per_head(setting):
    """A DiFull / DiPart probability is the softmax of the selected head's own K logits: in
    DiFull, another cell's image cannot change the target head's probabilities."""
    from saliencybench.core.outputs import class_probabilities

    torch.manual_seed(0)
    m = SmallRFNet().eval()
    w = GridSetting(m, setting, 2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        p = class_probabilities(w, w(x)).view(2, 4, 5)
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 4))
        if setting == "difull":
            torch.testing.assert_close(p[:, 0], torch.softmax(m(x[:, :, :16, :16]), 1))
            y = x.clone()
            y[:, :, 16:, 16:] = torch.randn(2, 3, 16, 16) * 5
            q = class_probabilities(w, w(y)).view(2, 4, 5)
            assert torch.equal(p[:, 0], q[:, 0])


def test_difull_rise_map_ignores_other_cells():
    """RISE on DiFull: replacing another cell's image leaves the target head's map unchanged
    (it did not when the softmax ran over every head's logits together)."""
    from saliencybench.attributions.base import compute_attribution

    torch.manual_seed(0)
    w = GridSetting(SmallRFNet().eval(), "difull", 2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    y = x.clone()
    y[:, :, 16:, 16:] = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6)) * 3
    target = torch.tensor([0 * 5 + 1, 0 * 5 + 3])
    params = {"n_masks": 64, "grid": 4}
    a = compute_attribution("rise", w, x, target, params=params, seeds=[0, 1])
    b = compute_attribution("rise", w, y, target, params=params, seeds=[0, 1])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp", "layercam", "scorecam", "ablationcam"])
def test_cam_methods_at_the_input_layer(method):
    """Rao et al. 2022 Fig. 9: CAMs at the input treat the image's channels as the activation
    (the official code hands every method the activation at the requested layer)."""
    from saliencybench.attributions.base import compute_attribution, raw_attribution
    from saliencybench.core.registry import METHODS

    torch.manual_seed(0)
    w = GridSetting(SmallRFNet().eval(), "gridpg", 2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    target = torch.tensor([1, 5 + 2])
    maps = compute_attribution(method, w, x, target, params={"layer": "input"})
    assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all() and float(maps.abs().sum()) > 0
    if method == "gradcam":  # relu(sum_c mean_ij(dy/dx_c) x_c) at full resolution
        xg = x.clone().requires_grad_(True)
        w(xg).gather(1, target[:, None]).sum().backward()
        expect = (xg.grad.mean((2, 3), keepdim=True) * x).sum(1, keepdim=True).clamp(min=0)
        raw = raw_attribution(METHODS.get("gradcam"), w, x, target, params={"layer": "input"})
        torch.testing.assert_close(raw, expect, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("setting", ["gridpg", "difull"])
@pytest.mark.parametrize("layer", ["middle", "final"])
def test_rise_at_middle_and_final_layers(setting, layer):
    """RISE at a layer (Rao et al. 2022 Fig. 9, official code): masks of the layer's size
    multiply its activation; in DiFull the map stays in the scored cell's part of the layer."""
    from saliencybench.attributions.base import compute_attribution, raw_attribution
    from saliencybench.core.registry import METHODS

    torch.manual_seed(0)
    m = SmallRFNet().eval()
    w = GridSetting(m, setting, 2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    target = torch.tensor([0 * 5 + 1, 0 * 5 + 4])
    params = {"n_masks": 32, "grid": 4, "layer": layer}
    raw = raw_attribution(METHODS.get("rise"), w, x, target, params=params, seeds=[0, 1])
    side = 32 if layer == "middle" else 16  # features.1: full resolution; features.4: after the pool
    assert raw.shape == (2, 1, side, side) and torch.isfinite(raw).all()
    maps = compute_attribution("rise", w, x, target, params=params, seeds=[0, 1])
    assert maps.shape == (2, 1, 32, 32)
    if setting == "difull":  # replacing another cell changes nothing for the top-left head
        y = x.clone()
        y[:, :, 16:, :16] = 3 * torch.randn(2, 3, 16, 16)
        again = raw_attribution(METHODS.get("rise"), w, y, target, params=params, seeds=[0, 1])
        torch.testing.assert_close(again, raw, atol=1e-6, rtol=1e-5)


def test_scorecam_weights_are_probabilities_of_the_selected_head():
    """Score-CAM's channel weight is the target's probability under its own head's softmax on a
    grid model (Rao et al. 2022 §3.1), not a softmax over every head's logits together."""
    from saliencybench.attributions.cam import _channel_masked_scores

    class TwoHeads(nn.Module):
        sb_heads = 2

        def forward(self, x):  # head 0: 3 logits from the input; head 1: 3 large logits
            m = x.mean((1, 2, 3))
            return torch.stack([m, 2 * m, -m, 50 + m, 60 + m, 70 + m], dim=1)

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    act = torch.rand(2, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([1, 0])
    scores, constant = _channel_masked_scores(TwoHeads(), x, target, act, align_corners=False, eps=0.0,
                                              probability=True, internal_batch_size=5)
    assert not constant.any()
    up = F.interpolate(act.flatten(0, 1).unsqueeze(1), size=(8, 8), mode="bilinear", align_corners=False)
    lo, hi = up.flatten(1).amin(1).view(-1, 1, 1, 1), up.flatten(1).amax(1).view(-1, 1, 1, 1)
    masked = x.repeat_interleave(4, 0) * (up - lo) / (hi - lo)
    head0 = torch.softmax(TwoHeads()(masked)[:, :3], dim=1).view(2, 4, 3)
    expected = head0[torch.arange(2), :, target]
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-5)
    assert float(scores.min()) > 0.05  # a softmax over all six logits would make them ~e-22
