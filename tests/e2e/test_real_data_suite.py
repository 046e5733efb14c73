"""End-to-end: a suite on a fake CUB tree and a random-init torchvision model, through the runner."""

from __future__ import annotations

import pytest

from helpers.real_data import make_fake_cub
from saliencybench.benchmark.config import config_from_dict


@pytest.mark.slow
def test_suite_runs_on_fake_cub_with_torchvision_model(tmp_path):
    from saliencybench.benchmark.runner import run_suite

    make_fake_cub(tmp_path / "cub", n_classes=4, train_per_class=3, test_per_class=2)
    cfg = config_from_dict({
        "suite": {"name": "fake-cub", "datasets": ["cub"], "models": ["resnet18"],
                  "methods": ["saliency", "gradcam"], "metrics": ["insertion", "mass_in_mask"],
                  "n_samples": 4, "batch_size": 4, "seed": 0, "device": "cpu", "figures": False},
        "datasets": {"cub": {"root": str(tmp_path / "cub"), "image_size": 32, "val_size": 4, "num_workers": 1}},
        "models": {"resnet18": {"num_classes": 4}},
        "metrics": {"insertion": {"pixels_per_step": 256}},
        "paper": [{"dataset": "cub", "model": "resnet18", "method": "gradcam", "metric": "insertion",
                   "value": 0.5, "source": "test"}],
    })
    manifest = run_suite(cfg, tmp_path / "out")
    import pandas as pd

    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    ok = scores[scores["status"] == "ok"]
    assert set(ok["metric"]) == {"insertion", "mass_in_mask"} and set(ok["method"]) == {"saliency", "gradcam"}
    assert len(ok) == 2 * 2 * 4 and ok["value"].between(0, 1).all()
    assert manifest["config"]["paper"][0]["value"] == 0.5


@pytest.mark.slow
def test_suite_runs_on_fake_imagenet_with_torchvision_model(tmp_path):
    from helpers.real_data import make_fake_imagenet
    from saliencybench.benchmark.runner import run_suite

    make_fake_imagenet(tmp_path / "imagenet", n_classes=3, per_class=2)
    cfg = config_from_dict({
        "suite": {"name": "fake-imagenet", "datasets": ["imagenet"], "models": ["vgg11"],
                  "methods": ["ixg", "lrp_epsilon"], "metrics": ["insertion", "deletion", "id_score"],
                  "n_samples": 3, "batch_size": 3, "seed": 0, "device": "cpu", "figures": False},
        "datasets": {"imagenet": {"root": str(tmp_path / "imagenet"), "image_size": 32, "num_workers": 1}},
        "models": {"vgg11": {"num_classes": 3}},
        "metrics": {m: {"preset": "otsuki2024", "pixels_per_step": 128} for m in ("insertion", "deletion", "id_score")},
    })
    manifest = run_suite(cfg, tmp_path / "out")
    import pandas as pd

    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert (scores["status"] == "ok").all() and len(scores) == 2 * 3 * 3
    assert scores["value"].between(-1, 1).all()
    assert sorted(manifest["datasets"]["imagenet"]["wnids"]) == manifest["datasets"]["imagenet"]["wnids"]
    assert scores["sample_id"].str.contains("ILSVRC2012_val_").all()


@pytest.mark.slow
def test_suite_runs_on_fake_cifar10_with_nib_vgg(tmp_path, monkeypatch):
    from helpers.real_data import make_fake_cifar, skip_md5
    from saliencybench.benchmark.runner import run_suite

    skip_md5(monkeypatch)
    make_fake_cifar(tmp_path / "cifar", "cifar10", n_per_file=20)
    cfg = config_from_dict({
        "suite": {"name": "fake-cifar", "datasets": ["cifar10"], "models": ["nib_vgg13_6"],
                  "methods": ["gxsi", "pgxi"], "metrics": ["mia", "morf"],
                  "n_samples": 10, "batch_size": 5, "seed": 0, "device": "cpu", "figures": False},
        "datasets": {"cifar10": {"root": str(tmp_path / "cifar"), "split": "test"}},
        "metrics": {"mia": {"iterations": 3}, "morf": {"pixels_per_step": 64}},
    })
    run_suite(cfg, tmp_path / "out")
    import pandas as pd

    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    curves = pd.read_csv(tmp_path / "out" / "curves.csv.gz")
    assert (scores["status"] == "ok").all() and len(scores) == 2 * 2 * 10
    mia = curves[curves.metric == "mia"]
    assert sorted(mia["step"].unique()) == [0, 1, 2, 3] and mia["value"].isin([0, 1]).all()
