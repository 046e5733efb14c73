"""timm models through the registry: ``timm:<name>``, layers from feature_info, data config, a suite."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from saliencybench.benchmark.config import config_from_dict, split_spec
from saliencybench.benchmark.results import read_scores
from saliencybench.benchmark.runner import (
    build_model,
    match_normalization,
    model_input_size,
    resolve_suite,
    run_suite,
)
from saliencybench.core.modules import get_layer
from saliencybench.core.registry import MODELS, MissingDependencyError, UnknownNameError
from saliencybench.core.types import IDENTITY_NORMALIZATION, Normalization, SampleSet
from saliencybench.models.torchvision_zoo import parse_model_spec

SMALL = ["resnet18", "mobilenetv3_small_100"]


def _timm():
    return pytest.importorskip("timm", reason="timm is an optional extra: pip install 'saliency-bench[timm]'")


# -- specs: "timm:" is a prefix, not arch "timm" with weights ------------------------------------
def test_timm_prefix_is_part_of_the_name():
    assert split_spec("timm:resnet18") == ("timm:resnet18", None)
    assert split_spec("timm:resnet50:a1_in1k") == ("timm:resnet50", "a1_in1k")
    assert split_spec("resnet50:IMAGENET1K_V1") == ("resnet50", "IMAGENET1K_V1")
    assert parse_model_spec("timm:efficientnet_b0") == ("timm:efficientnet_b0", None)
    assert parse_model_spec(" timm:resnet50.a1_in1k ") == ("timm:resnet50.a1_in1k", None)
    with pytest.raises(ValueError, match="malformed"):
        parse_model_spec("timm:")


def test_missing_timm_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    MODELS.remove("timm:resnet18")  # drop a cached entry
    with pytest.raises(MissingDependencyError, match=r"pip install 'saliency-bench\[timm\]'"):
        MODELS.get("timm:resnet18")
    assert "timm:resnet18" not in MODELS
    from saliencybench.benchmark.cli import main

    assert main(["list", "models", "timm:res*"]) == 2  # a usage error, one line, no traceback
    assert "pip install 'saliency-bench[timm]'" in capsys.readouterr().err


# -- with timm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SMALL)
def test_random_init_eval_mode_and_layers_from_feature_info(name):
    _timm()
    from saliencybench.attributions.base import compute_attribution

    torch.manual_seed(0)
    model = MODELS.get(f"timm:{name}").obj(num_classes=5)
    assert not model.training and all(not m.training for m in model.modules())
    info = model.feature_info
    assert model.sb_layers["final"] == model.sb_layers["cam"] == info[-1]["module"]
    assert model.sb_layers["middle"] == info[len(info) // 2]["module"] and model.sb_layers["input"] is None
    if name == "resnet18":
        assert model.sb_layers == {"input": None, "middle": "layer2", "final": "layer4", "cam": "layer4"}
    for key in ("middle", "final"):
        get_layer(model, model.sb_layers[key])
    assert model.sb_info["data_config"]["input_size"] == [3, 224, 224]
    assert model.sb_normalization.mean == pytest.approx((0.485, 0.456, 0.406))
    x = torch.randn(2, 3, 64, 64)
    t = torch.tensor([1, 3])
    assert model(x).shape == (2, 5)
    for layer in ("cam", "middle", "final"):
        a = compute_attribution("gradcam", model, x, t, params={"layer": layer})
        assert a.shape == (2, 1, 64, 64) and torch.isfinite(a).all(), layer
    assert not model.training


def test_unknown_names_suggest_timm_models():
    _timm()
    with pytest.raises(UnknownNameError, match=r"unknown timm model 'resnt18'; did you mean 'timm:resnet18'"):
        MODELS.get("timm:resnt18")
    with pytest.raises(UnknownNameError, match=r"unknown pretrained tag 'bogus' for timm model 'resnet18'.*a1_in1k"):
        MODELS.get("timm:resnet18.bogus")
    with pytest.raises(UnknownNameError, match=r"'timm:' is a prefix"):
        MODELS.get("timm")
    with pytest.raises(UnknownNameError, match="did you mean 'timm:efficientnet_b0'"):
        resolve_suite(config_from_dict({"suite": {"models": ["timm:eficientnet_b0"], "methods": ["saliency"],
                                                  "metrics": ["insertion"]}}))
    assert MODELS.resolve("timm:resnet18*,sb_vgg") == ["timm:resnet18", "timm:resnet18d", "sb_vgg"]


def test_pretrained_failure_is_a_clear_error(monkeypatch):
    timm = _timm()

    def offline(*a, **kw):
        if kw.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        raise AssertionError("random init was not expected")

    monkeypatch.setattr(timm, "create_model", offline)
    factory = MODELS.get("timm:resnet18").obj
    with pytest.raises(RuntimeError, match=r"pretrained weights of timm:resnet18 .*pretrained = false"):
        factory(pretrained=True)
    with pytest.raises(RuntimeError, match=r"timm:resnet18.a1_in1k"):  # NAME:WEIGHTS implies pretrained
        factory(weights="a1_in1k")
    # the suite's model parameters and the NAME:WEIGHTS spelling reach the factory
    cfg = config_from_dict({"models": {"timm:resnet18": {"pretrained": True}}})
    with pytest.raises(RuntimeError, match=r"pretrained weights of timm:resnet18 "):
        build_model("timm:resnet18", cfg, torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"pretrained weights of timm:resnet50.a1_in1k "):
        build_model("timm:resnet50:a1_in1k", config_from_dict({}), torch.device("cpu"))


def test_checkpoint_loads_every_weight(tmp_path):
    _timm()
    factory = MODELS.get("timm:resnet18").obj
    torch.manual_seed(1)
    src = factory(num_classes=3)
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    torch.manual_seed(2)
    loaded = factory(num_classes=3, checkpoint=str(path))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(src(x), loaded(x))


def test_samples_follow_the_models_data_config():
    _timm()
    from saliencybench.datasets.imagenet import imagenet

    model = MODELS.get("timm:resnet18").obj()  # crop_pct 0.95 at 224
    assert model_input_size(imagenet, model) == {"image_size": 224, "resize_size": 235}
    assert model_input_size(lambda *, size=64: None, model) == {}  # not an ImageNet-style factory
    pixels = torch.rand(2, 3, 8, 8)
    samples = SampleSet(pixels.clone(), torch.tensor([0, 1]), normalization=IDENTITY_NORMALIZATION, num_classes=2)
    model.sb_normalization = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = match_normalization(samples, model)
    assert out.normalization == model.sb_normalization
    assert torch.allclose(out.x, (pixels - 0.5) / 0.25) and torch.allclose(out.normalization.to_pixel(out.x), pixels)
    assert out.info["normalization_from_model"]["std"] == [0.25] * 3
    same = SampleSet(pixels.clone(), torch.tensor([0, 1]), normalization=model.sb_normalization, num_classes=2)
    assert torch.equal(match_normalization(same, model).x, pixels)


def test_suite_with_timm_resnet18_on_synthetic(tmp_path):
    _timm()
    cfg = config_from_dict({
        "suite": {"name": "timm-smoke", "datasets": ["synthetic"], "models": ["timm:resnet18"],
                  "methods": ["saliency", "gradcam"], "metrics": ["insertion", "deletion"],
                  "n_samples": 4, "batch_size": 4, "seed": 0, "figures": False},
        "datasets": {"synthetic": {"split_size": 16}},
        "models": {"timm:resnet18": {"num_classes": 8}},
        "metrics": {"insertion": {"pixels_per_step": 1024}, "deletion": {"pixels_per_step": 1024}},
    })
    run_suite(cfg, tmp_path / "out", device="cpu", progress=False)
    scores = read_scores(tmp_path / "out")
    assert len(scores) == 4 * 2 * 2
    assert set(scores["model"]) == {"timm:resnet18"} and set(scores["status"]) == {"ok"}
    assert scores["value"].notna().all()
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    build = manifest["models"]["timm:resnet18"]["build"]
    assert build["timm_name"] == "resnet18" and build["weights"] is None and build["num_classes"] == 8
    assert manifest["datasets"]["synthetic"]["normalization_from_model"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_cli_lists_the_prefix_and_timm_names(capsys):
    _timm()
    from saliencybench.benchmark.cli import main

    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("timm:")]
    assert len(lines) == 1 and "any timm model" in lines[0] and "available" in lines[0]
    assert main(["list", "models", "timm:resnet18*"]) == 0
    assert capsys.readouterr().out.split() == ["timm:resnet18", "timm:resnet18d"]
    assert main(["list", "models", "sb_*"]) == 0
    assert "timm:" not in capsys.readouterr().out
    assert main(["list", "models", "timm:resnt18"]) == 2
    assert "did you mean 'timm:resnet18'" in capsys.readouterr().err
