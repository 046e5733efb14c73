"""End-to-end: a suite on a fake CUB tree and a random-init torchvision model, through the runner."""

from __future__ import annotations

import pytest
from fixtures_real import make_fake_cub

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
