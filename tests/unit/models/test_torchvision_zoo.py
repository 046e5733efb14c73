"""torchvision models from the registry, weights enums (no download), layers, checkpoints, NIB-VGG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliencybench.core.errors import CheckpointError
from saliencybench.core.modules import get_layer, resolve_layer
from saliencybench.core.registry import MODELS
from saliencybench.models import torchvision_zoo as tz
from saliencybench.models.checkpoint import load_checkpoint, save_checkpoint


def build(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.get(name).obj(**kw)


def build_structure(name: str, **kw) -> nn.Module:
    """The model on the meta device: names and types only, no weight initialisation cost."""
    with torch.device("meta"):
        return MODELS.get(name).obj(device="meta", **kw)


# -- specs and weights enums --------------------------------------------------------------------
def test_parse_model_spec():
    assert tz.parse_model_spec("resnet50:IMAGENET1K_V1") == ("resnet50", "IMAGENET1K_V1")
    assert tz.parse_model_spec(" vgg16 ") == ("vgg16", None)
    for bad in ("", ":IMAGENET1K_V1", "resnet50:"):
        with pytest.raises(ValueError):
            tz.parse_model_spec(bad)


def test_resolve_weights_through_torchvision_enums_without_download():
    from torchvision.models import ResNet50_Weights, VGG16_Weights

    w = tz.resolve_weights("resnet50", "IMAGENET1K_V1")
    assert w is ResNet50_Weights.IMAGENET1K_V1
    assert w.url.startswith("https://download.pytorch.org/models/resnet50") and w.url.endswith(".pth")
    assert len(w.meta["categories"]) == 1000
    assert tz.resolve_weights("resnet50", "DEFAULT") is ResNet50_Weights.DEFAULT
    assert tz.resolve_weights("vgg16", "VGG16_Weights.IMAGENET1K_V1") is VGG16_Weights.IMAGENET1K_V1
    assert tz.resolve_weights("inception_v3", "IMAGENET1K_V1").meta["min_size"] == (75, 75)
    assert tz.resolve_weights("resnet18", None) is None and tz.resolve_weights("resnet18", "none") is None
    with pytest.raises(tz.WeightsError, match="IMAGENET1K_V1"):
        tz.resolve_weights("resnet18", "IMAGENET1K_V9")
    with pytest.raises(tz.WeightsError, match="another architecture"):
        tz.resolve_weights("resnet18", "ResNet50_Weights.IMAGENET1K_V1")


def test_pretrained_path_loads_enum_state_dict_and_replaces_head(monkeypatch):
    """weights= goes through torchvision's get_state_dict (stubbed: nothing is downloaded)."""
    from torchvision.models import resnet18
    from torchvision.models._api import WeightsEnum

    torch.manual_seed(123)
    reference = resnet18().state_dict()
    seen = []

    def fake_get_state_dict(self, *args, **kwargs):
        seen.append(str(self))
        return reference

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    m = tz.build_model_from_spec("resnet18:IMAGENET1K_V1")
    assert seen == ["ResNet18_Weights.IMAGENET1K_V1"]
    assert torch.equal(m.conv1.weight, reference["conv1.weight"])
    assert m.sb_info["weights"] == "ResNet18_Weights.IMAGENET1K_V1" and not m.training
    # fine-tuning head: pretrained backbone, fresh 7-way classifier
    m7 = build("resnet18", weights="IMAGENET1K_V1", num_classes=7)
    assert m7.fc.out_features == 7 and torch.equal(m7.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    assert m7(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    # pretrained=True means DEFAULT weights
    build("resnet18", pretrained=True)
    assert seen[-1] == "ResNet18_Weights.IMAGENET1K_V1"


def test_every_torchvision_name_is_registered_with_input_size():
    for arch in ("resnet18", "resnet50", "vgg11", "vgg16", "vgg11_bn", "vgg16_bn", "inception_v3"):
        entry = MODELS.get(arch)
        assert entry.meta["family"] == "torchvision"
        assert entry.meta["input_size"] == (299 if arch == "inception_v3" else 224)


# -- layers -----------------------------------------------------------------------------------
def _conv_index_before(model: nn.Module, relu_name: str) -> int:
    """How many convolutions come before module ``relu_name`` in registration order."""
    n = 0
    for name, m in model.named_modules():
        if name == relu_name:
            return n
        n += isinstance(m, nn.Conv2d)
    raise KeyError(relu_name)


def test_vgg11_layers_are_relu_after_conv5_and_conv8():
    m = build_structure("vgg11", num_classes=10)
    L = m.sb_layers
    assert (L["input"], L["middle"], L["final"], L["cam"]) == (None, "features.12", "features.19", "features.19")
    assert isinstance(get_layer(m, L["middle"]), nn.ReLU) and isinstance(get_layer(m, L["final"]), nn.ReLU)
    assert _conv_index_before(m, L["middle"]) == 5 and _conv_index_before(m, L["final"]) == 8
    assert resolve_layer(m, "middle") == "features.12"


def test_vgg16_middle_is_first_conv_of_fourth_stage():
    m = build_structure("vgg16", num_classes=10)
    assert _conv_index_before(m, m.sb_layers["middle"]) == 8 and _conv_index_before(m, m.sb_layers["final"]) == 13


def test_vgg_bn_and_resnet_layers():
    m = build_structure("vgg11_bn", num_classes=10)
    assert _conv_index_before(m, m.sb_layers["middle"]) == 5
    assert isinstance(get_layer(m, m.sb_layers["middle"]), nn.ReLU)
    r = build("resnet18", num_classes=10)
    assert r.sb_layers == {"input": None, "middle": "layer2", "final": "layer4", "cam": "layer4"}
    assert r(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_inception_v3_builds_and_forwards_small_input():
    m = build("inception_v3", num_classes=5, init_weights=False)  # skip the slow truncated-normal init
    assert m.sb_layers["middle"] == "Mixed_6e" and m.sb_layers["final"] == "Mixed_7c"
    get_layer(m, "Mixed_6e")
    with torch.no_grad():
        out = m(torch.randn(1, 3, 80, 80))
    assert out.shape == (1, 5) and not m.training


# -- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_roundtrip_through_factory_and_containers(tmp_path):
    src = build("resnet18", num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    path = save_checkpoint(tmp_path / "r18.pt", src, arch="resnet18", epoch=3)
    loaded = MODELS.get("resnet18").obj(num_classes=5, checkpoint=str(path))
    with torch.no_grad():
        assert torch.allclose(loaded(x), src(x))
    assert loaded.sb_info["checkpoint"] == str(path)
    # other containers: raw state dict with DataParallel prefixes, {"model": ...}
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save(sd, tmp_path / "raw.pt")
    torch.save({"model": src.state_dict(), "epoch": 1}, tmp_path / "wrapped.pt")
    for name in ("raw.pt", "wrapped.pt"):
        m = build("resnet18", num_classes=5)
        load_checkpoint(m, tmp_path / name)
        assert torch.equal(m.fc.weight, src.fc.weight)


def test_checkpoint_errors_are_specific(tmp_path):
    src = build("resnet18", num_classes=5)
    torch.save(src.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch: fc\.weight \(5, 512\) vs model \(10, 512\)"):
        build("resnet18", num_classes=10, checkpoint=str(tmp_path / "r18.pt"))
    partial = {k: v for k, v in src.state_dict().items() if not k.startswith("layer4")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(build("resnet18", num_classes=5), tmp_path / "partial.pt")
    assert "missing keys: layer4.0.conv1.weight" in str(e.value) and "more)" in str(e.value)
    assert "unexpected keys: extra.weight" in str(e.value)
    (tmp_path / "junk.pt").write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        load_checkpoint(src, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(src, tmp_path / "absent.pt")
    torch.save({"epoch": 3}, tmp_path / "nostate.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_checkpoint(src, tmp_path / "nostate.pt")


# -- NIB-VGG (Lee & Chang 2021) --------------------------------------------------------------------
def test_nib_vgg_sizes_are_registered_and_bias_free():
    pytest.importorskip("saliencybench.models.nib")
    convs = {"nib_vgg13_6": 4, "nib_vgg13_4": 6, "nib_vgg13_2": 8, "nib_vgg13": 10, "nib_vgg16": 13}
    for name, n_conv in convs.items():
        assert name in MODELS
    m = build("nib_vgg13_6", num_classes=10, hidden=32)
    assert sum(isinstance(x, nn.Conv2d) for x in m.modules()) == convs["nib_vgg13_6"]
    assert all(getattr(x, "bias", None) is None for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear)))
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for key in ("middle", "final", "cam"):
        get_layer(m, m.sb_layers[key])
    with pytest.raises(ValueError, match="no published weights"):
        build("nib_vgg16", weights="IMAGENET1K_V1")
