"""The paper-reproduction suites (saliencybench/configs/) parse and are internally consistent."""

from __future__ import annotations

from collections import Counter

import pytest
import tomllib

from helpers import REPO

CONFIGS = REPO / "saliencybench" / "configs"
PAPER_SUITES = ["otsuki2024-imagenet", "otsuki2024-cub", "dga2022-pixelflip", "rao2022-gridpg",
                "lee2021-mia-cifar10"]
EXPECTED_PAPER_ROWS = {"otsuki2024-imagenet": 39, "otsuki2024-cub": 21, "dga2022-pixelflip": 56,
                       "rao2022-gridpg": 28, "lee2021-mia-cifar10": 30}


def _load(name: str) -> dict:
    with open(CONFIGS / f"{name}.toml", "rb") as fh:
        return tomllib.load(fh)


@pytest.mark.parametrize("name", PAPER_SUITES)
def test_suite_structure(name):
    data = _load(name)
    assert set(data) <= {"suite", "datasets", "models", "methods", "metrics", "paper"}
    suite = data["suite"]
    assert suite["name"] == name and suite["description"]
    for key in ("datasets", "models", "methods", "metrics"):
        assert isinstance(suite[key], list) and suite[key], key
        assert all(isinstance(v, str) and v for v in suite[key]) and len(set(suite[key])) == len(suite[key])
    assert isinstance(suite["n_samples"], int) and suite["n_samples"] > 0
    assert isinstance(suite["batch_size"], int) and suite["batch_size"] > 0
    assert suite["seed"] == 0 and suite["device"] == "auto"
    # every parameter table belongs to a listed name; aliases name a base
    for section, listed in (("datasets", suite["datasets"]), ("models", suite["models"]),
                            ("methods", suite["methods"]), ("metrics", suite["metrics"])):
        for key, params in data.get(section, {}).items():
            assert key in listed, f"[{section}.{key}] is not listed in [suite] {section}"
            assert isinstance(params, dict)
            if "base" in params:
                assert isinstance(params["base"], str) and params["base"] != key


@pytest.mark.parametrize("name", PAPER_SUITES)
def test_paper_numbers_refer_to_what_the_suite_runs(name):
    data = _load(name)
    suite, rows = data["suite"], data["paper"]
    assert len(rows) == EXPECTED_PAPER_ROWS[name]
    keys = []
    for r in rows:
        assert {"dataset", "model", "method", "metric", "value", "source"} <= set(r), r
        assert r["dataset"] in suite["datasets"] and r["model"] in suite["models"]
        assert r["method"] in suite["methods"], r["method"]
        if r["metric"] == "spearman":          # Rao et al. 2022, supp. Tables 1-2: a correlation between two methods
            assert r["versus"] in suite["methods"]
        else:
            assert r["metric"] in suite["metrics"], r["metric"]
        assert isinstance(r["value"], (int, float)) and -1.0 <= r["value"] <= 1.0  # fractions, not percent
        assert isinstance(r["source"], str) and r["source"]
        if "std" in r:
            assert 0.0 <= r["std"] < 0.1
        keys.append((r["dataset"], r["model"], r["method"], r["metric"], r.get("versus")))
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    assert not dupes, dupes


def test_selected_paper_numbers():
    """Spot checks against the papers' tables (fractions of the printed percentages)."""
    def value(name, **match):
        hits = [r["value"] for r in _load(name)["paper"] if all(r.get(k) == v for k, v in match.items())]
        assert len(hits) == 1, (name, match)
        return hits[0]

    assert value("otsuki2024-imagenet", method="lrp_resnet", metric="id_score") == 0.545        # Table 1
    assert value("otsuki2024-imagenet", method="integrated_gradients", metric="id_score") == -0.011
    assert value("otsuki2024-cub", method="scorecam", metric="id_score") == 0.457                # Table 1
    assert value("dga2022-pixelflip", model="inception_v3", method="dga", metric="lerf") == 0.691  # Table 3
    assert value("rao2022-gridpg", model="vgg11", method="s_intgrad_k129@input") == 0.80         # supp. Table 1
    assert value("lee2021-mia-cifar10", model="nib_vgg16", method="gxsi", metric="mia_i2") == 0.982  # Table 2


def test_checkpoint_paths_match_the_training_recipes_defaults():
    """The suites load the checkpoints that the recipes write by default."""
    cub = _load("otsuki2024-cub")["models"]["resnet50"]
    assert cub == {"num_classes": 200, "checkpoint": "checkpoints/resnet50_cub.pt"}
    for model, params in _load("lee2021-mia-cifar10")["models"].items():
        assert params["checkpoint"] == f"checkpoints/{model}_cifar10.pt"


@pytest.mark.parametrize("name", PAPER_SUITES)
def test_suite_loads_with_the_package_config_loader(name):
    from saliencybench.benchmark.config import load_config

    cfg = load_config(CONFIGS / f"{name}.toml")
    assert cfg.name == name and len(cfg.paper) == EXPECTED_PAPER_ROWS[name]


@pytest.mark.parametrize("name", ["rao2022-gridpg", "gridpg-default"])
def test_gridpg_suites_cover_cams_at_the_input_and_rise_at_layers(name):
    """Rao et al. 2022, Fig. 9 / official code: CAM methods at the input layer and RISE at the middle and
    final layers are part of the localization suites."""
    from saliencybench.benchmark.config import load_config
    from saliencybench.benchmark.report.localization import method_layer
    from saliencybench.benchmark.runner import resolve_suite

    cfg = load_config(CONFIGS / f"{name}.toml")
    resolve_suite(cfg)  # every alias resolves
    have = {method_layer(m, {"methods": {k: {"params": v} for k, v in cfg.method_params.items()}})
            for m in cfg.methods}
    cams = ("gradcam", "gradcam_pp", "layercam") + (("scorecam", "ablationcam") if name.startswith("rao") else ())
    for cam in cams:
        assert (cam, "input") in have, cam
    assert ("rise", "middle") in have and ("rise", "final") in have
