"""Default model zoo, NIB layers / VGGs, shipped checkpoints, training entry point.

NIB layers follow Lee & Chang 2021 (Sec. 3, Table 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from saliencybench.core.errors import CheckpointError
from saliencybench.core.modules import get_layer
from saliencybench.core.registry import MODELS
from saliencybench.datasets.synthetic import SYNTHETIC_NORMALIZATION, generate_range
from saliencybench.models.nib import NIB_VGG_CONFIGS, NIBBatchNorm2d, nib_vgg
from saliencybench.models.zoo import checkpoint_path

ZOO = ["sb_resnet", "sb_vgg", "sb_nibvgg"]


@pytest.fixture(scope="module")
def test_256() -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels, _ = generate_range("test", 0, 256)
    return SYNTHETIC_NORMALIZATION.from_pixel(pixels), labels


# --- NIB batch norm and NIB VGG (Lee & Chang 2021) ----------------------------------------

def test_nib_batchnorm_zero_in_zero_out_and_no_centring() -> None:
    bn = NIBBatchNorm2d(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight"] and bn.bias is None
    for mode in (True, False):
        bn.train(mode)
        assert torch.equal(bn(torch.zeros(2, 4, 5, 5)), torch.zeros(2, 4, 5, 5))
    bn = NIBBatchNorm2d(4).train()
    x = torch.randn(8, 4, 6, 6) * 3 + 5  # large mean: a centring BN would remove it
    y = bn(x)
    var = x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(y, x / torch.sqrt(var + bn.eps).view(1, -1, 1, 1))
    assert (y.mean(dim=(0, 2, 3)) > 1.0).all()
    # running variance tracked (unbiased, momentum 0.1), eval divides by it: linear map
    n = 8 * 6 * 6
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var * n / (n - 1))
    bn.eval()
    torch.testing.assert_close(bn(2 * x), 2 * bn(x))
    assert "running_mean" not in bn.state_dict()


@pytest.mark.parametrize("cfg", sorted(NIB_VGG_CONFIGS))
def test_nib_vgg_configs_on_cifar_size(cfg: str) -> None:
    model = nib_vgg(cfg, 10, 32, width=1 / 16, hidden=32).eval()
    assert not any("bias" in n for n, _ in model.named_parameters())
    assert all(getattr(m, "bias", None) is None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    # Lee & Chang 2021, Table 3
    assert n_layers == {"vgg13-6": 7, "vgg13-4": 9, "vgg13-2": 11, "vgg13": 13, "vgg16": 16}[cfg]
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    # No implicit bias: f(0) = 0 and f is positively homogeneous, f(a x) = a f(x) (Lee & Chang 2021, Eq. 8).
    assert torch.equal(model(torch.zeros(1, 3, 32, 32)), torch.zeros(1, 10))
    torch.testing.assert_close(model(2.5 * x), 2.5 * out, rtol=1e-4, atol=1e-5)


def test_nib_vgg_full_width_sizes_and_errors() -> None:
    m = nib_vgg("NIB_VGG16", 100, 32, width=1 / 8, hidden=64)
    assert m.classifier[0].in_features == 512 // 8 and m.classifier[-1].out_features == 100
    assert [c.out_channels for c in m.features if isinstance(c, nn.Conv2d)] == [
        8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert nib_vgg("vgg13", 10, 64, width=1 / 16, hidden=8, pool_hw=1).classifier[0].in_features == 32
    assert nib_vgg("vgg13-6", 10, 64, width=0.125).classifier[0].in_features == 16 * 16 * 16
    with pytest.raises(KeyError, match="vgg13-6"):
        nib_vgg("vgg19", 10, 32)


# --- the three zoo models ----------------------------------------------------------------

@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_structure(name: str) -> None:
    entry = MODELS.get(name)
    assert entry.meta["dataset"] == "synthetic" and entry.meta["input_size"] == (3, 64, 64)
    model = entry.obj(pretrained=False)
    assert not model.training
    assert set(model.sb_layers) == {"input", "middle", "final", "cam"} and model.sb_layers["input"] is None
    assert model.sb_layers == entry.meta["layers"]
    for key in ("middle", "final", "cam"):
        get_layer(model, model.sb_layers[key])  # raises if absent
    with torch.no_grad():
        assert model(torch.randn(3, 3, 64, 64)).shape == (3, 8)
    assert MODELS.get(name).obj(pretrained=False, num_classes=5)(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_resnet_has_torchvision_names_and_skips() -> None:
    model = MODELS.get("sb_resnet").obj(pretrained=False)
    for attr in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "avgpool", "fc"):
        assert hasattr(model, attr)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) >= 6
    assert sum(b.downsample is not None for b in blocks) >= 1
    assert sum(b.downsample is None for b in blocks) >= 3


def test_vgg_names() -> None:
    model = MODELS.get("sb_vgg").obj(pretrained=False)
    assert isinstance(model.features, nn.Sequential) and isinstance(model.classifier, nn.Sequential)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.features)
    nib = MODELS.get("sb_nibvgg").obj(pretrained=False)
    assert not any("bias" in n for n, _ in nib.named_parameters())


@pytest.mark.parametrize("name", ZOO)
def test_shipped_checkpoint_small_and_accurate(name: str, test_256) -> None:
    path = checkpoint_path(name)
    assert path.is_file(), f"{path} missing: run `saliencybench train {name}`"
    assert path.stat().st_size < 5 * 2**20
    model = MODELS.get(name).obj()  # pretrained=True loads the shipped file
    x, y = test_256
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.95, f"{name}: accuracy {acc:.3f} on 256 test images"


def test_missing_and_corrupt_checkpoint_errors(tmp_path) -> None:
    factory = MODELS.get("sb_vgg").obj
    with pytest.raises(CheckpointError, match=r"not found: .*nope\.pt.*saliencybench train sb_vgg"):
        factory(checkpoint=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"(?s)unreadable.*bad\.pt.*saliencybench train sb_vgg"):
        factory(checkpoint=str(bad))
    other = tmp_path / "other.pt"
    torch.save(MODELS.get("sb_resnet").obj(pretrained=False).state_dict(), other)
    with pytest.raises(CheckpointError, match="does not fit"):
        factory(checkpoint=str(other))


def test_checkpoint_round_trip_and_head_replacement(tmp_path) -> None:
    torch.manual_seed(1)
    src = MODELS.get("sb_nibvgg").obj(pretrained=False)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    loaded = MODELS.get("sb_nibvgg").obj(checkpoint=str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x))
    five = MODELS.get("sb_nibvgg").obj(checkpoint=str(path), num_classes=5)
    torch.testing.assert_close(five.features[0].weight, src.features[0].weight)


@pytest.mark.slow  # end-to-end run of the training command (a few seconds)
def test_train_model_smoke(tmp_path, monkeypatch) -> None:
    import saliencybench.training.recipes as train_mod
    from saliencybench.models.checkpoint import read_state_dict

    cache: dict = {}

    def cached_range(split, start, stop, **kw):  # render each block once for both runs
        key = (split, start, stop, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = generate_range(split, start, stop, **kw)
        return tuple(t.clone() for t in cache[key])

    monkeypatch.setattr(train_mod, "generate_range", cached_range)
    train_model = train_mod.train_model
    out = tmp_path / "sb_nibvgg.pt"
    res = train_model("sb_nibvgg", epochs=1, n_train=64, batch_size=32, out=out, progress=False, eval_n=32)
    assert out.is_file() and set(res) >= {"accuracy", "epochs", "seconds"}
    assert res["epochs"] == 1 and 0.0 <= res["accuracy"] <= 1.0
    saved = torch.load(out, weights_only=True)  # the one format: {"state_dict": ..., "arch": ..., ...}
    assert saved["arch"] == "sb_nibvgg" and saved["recipe"]["optimizer"] == "adamw" and len(saved["history"]) == 1
    state = read_state_dict(out)
    out2 = tmp_path / "again.pt"
    train_model("sb_nibvgg", epochs=1, n_train=64, batch_size=32, out=out2, progress=False, eval_n=32)
    state2 = read_state_dict(out2)
    assert all(torch.equal(state[k], state2[k]) for k in state)  # seeded and deterministic
    MODELS.get("sb_nibvgg").obj(checkpoint=str(out))  # loads with weights_only=True
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_shape_mismatch_outside_the_head_is_an_error(tmp_path):
    """A stale checkpoint of another width must not load silently into a chance-level model."""
    from saliencybench.core.errors import CheckpointError
    from saliencybench.models.zoo import sb_vgg

    model = sb_vgg(pretrained=False)
    state = model.state_dict()
    first_conv = next(k for k, v in state.items() if v.ndim == 4)
    state[first_conv] = torch.zeros(state[first_conv].shape[0] + 1, *state[first_conv].shape[1:])
    bad = tmp_path / "stale.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        sb_vgg(checkpoint=str(bad))


def test_zoo_class_count_is_the_synthetic_datasets() -> None:
    """``models`` never imports ``datasets``: the zoo keeps its own constant, checked here."""
    from saliencybench.datasets.synthetic import CLASS_NAMES, NUM_CLASSES
    from saliencybench.models import zoo

    assert zoo.NUM_CLASSES == NUM_CLASSES == len(CLASS_NAMES)


@pytest.mark.parametrize("name", ZOO)
def test_shipped_checkpoints_are_read_by_the_one_loader(name: str) -> None:
    """The shipped files are bare state dicts; the one loader reads them unchanged."""
    from saliencybench.models.checkpoint import load_checkpoint, read_state_dict

    raw = torch.load(checkpoint_path(name), map_location="cpu", weights_only=True)
    state = read_state_dict(checkpoint_path(name))
    assert list(state) == list(raw) and all(torch.equal(state[k], raw[k]) for k in raw)
    model = load_checkpoint(MODELS.get(name).obj(pretrained=False), checkpoint_path(name))
    assert all(torch.equal(v, raw[k]) for k, v in model.state_dict().items())


def test_models_datasets_training_import_one_way() -> None:
    """datasets -> models (a grid dataset wraps its model), training -> both; models never
    imports datasets or training, and none of the three imports benchmark."""
    import ast
    from pathlib import Path

    import saliencybench

    root = Path(saliencybench.__file__).parent
    forbidden = {"models": ("datasets", "training", "benchmark"), "datasets": ("training", "benchmark"),
                 "training": ("benchmark",)}
    bad = []
    for package, others in forbidden.items():
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                bad += [f"{path.relative_to(root)} imports {n}" for n in names
                        if any(n == f"saliencybench.{o}" or n.startswith(f"saliencybench.{o}.") for o in others)]
    assert not bad, bad
