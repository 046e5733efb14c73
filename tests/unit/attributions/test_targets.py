"""Suite keys ``explain_target`` (the class the methods explain) and ``score_target`` (the class
whose score the perturbation metrics read); ``target`` is the shorthand for both. Otsuki et al.
2024's official code explains the predicted class and reads the insertion / deletion score of
the label."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from helpers.toy import ToyNet, grad_x_input, register_all, toy_dataset
from saliencybench.benchmark.config import config_from_dict, find_suite, load_config
from saliencybench.benchmark.runner import run_suite
from saliencybench.core.errors import ConfigError
from saliencybench.core.registry import METHODS, register_method

register_all()

SEEN: list[torch.Tensor] = []


def _recording_gxi(model, x, target, **kw):
    SEEN.append(target.detach().cpu().clone())
    return grad_x_input(model, x, target)


if "toy_target_recorder" not in METHODS:
    register_method("toy_target_recorder", family="gradient")(_recording_gxi)

SUITE = """
[suite]
name = "targets"
datasets = ["toy"]
models = ["toy_net"]
methods = ["toy_target_recorder"]
metrics = ["insertion"]
n_samples = 12
batch_size = 12
seed = 0
device = "cpu"
figures = false
{keys}

[metrics.insertion]
pixels_per_step = 64
"""


def _run(tmp_path, keys: str, name: str):
    p = tmp_path / f"{name}.toml"
    p.write_text(SUITE.format(keys=keys))
    SEEN.clear()
    out = tmp_path / name
    run_suite(load_config(p), out, progress=False)
    curves = pd.read_csv(out / "curves.csv.gz")
    # the last point of an insertion curve is the whole image: the score of the scored class
    last = curves[curves.metric == "insertion"].sort_values("x").groupby("sample_id").tail(1)
    return torch.cat(SEEN), last.set_index("sample_id")["value"], json.loads((out / "run.json").read_text())


def _truth():
    ds = toy_dataset(n_samples=12)
    with torch.no_grad():
        p = torch.softmax(ToyNet().eval()(ds.x), 1)
    return ds, p


def test_explains_the_predicted_class_and_scores_the_label(tmp_path):
    ds, p = _truth()
    pred = p.argmax(1)
    assert int((pred != ds.y).sum()) >= 3  # the toy case has predictions that miss the label
    targets, last, manifest = _run(tmp_path, 'explain_target = "predicted"\nscore_target = "label"', "pl")
    assert torch.equal(targets, pred)  # attributions computed for the predicted class
    want = p[torch.arange(12), ds.y]  # insertion read for the label
    got = torch.tensor(last.loc[ds.sample_ids].to_numpy(), dtype=torch.float32)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, p.max(1).values, atol=1e-3)
    assert manifest["explain_target"] == "predicted" and manifest["score_target"] == "label"
    assert manifest["config"]["suite"]["explain_target"] == "predicted"
    assert manifest["metrics"]["insertion"]["resolved"]["target"] == "label"


def test_target_is_the_shorthand_for_both(tmp_path):
    ds, p = _truth()
    targets, last, manifest = _run(tmp_path, 'target = "predicted"', "pp")
    assert torch.equal(targets, p.argmax(1))
    got = torch.tensor(last.loc[ds.sample_ids].to_numpy(), dtype=torch.float32)
    assert torch.allclose(got, p.max(1).values, atol=1e-5)
    assert manifest["explain_target"] == "predicted" and manifest["score_target"] == "predicted"
    # an explicit key overrides its half of the shorthand
    targets, last, manifest = _run(tmp_path, 'target = "label"\nexplain_target = "predicted"', "lp")
    assert torch.equal(targets, p.argmax(1))
    got = torch.tensor(last.loc[ds.sample_ids].to_numpy(), dtype=torch.float32)
    assert torch.allclose(got, p[torch.arange(12), ds.y], atol=1e-5)


def test_a_metric_own_target_wins_over_the_suite(tmp_path):
    ds, p = _truth()
    keys = 'score_target = "label"\n\n[metrics.insertion]\npixels_per_step = 64\ntarget = "predicted"'
    p_toml = tmp_path / "own.toml"
    p_toml.write_text(SUITE.format(keys="").replace('[metrics.insertion]\npixels_per_step = 64\n', "")
                      .replace('figures = false\n', 'figures = false\n' + keys + "\n"))
    out = tmp_path / "own"
    run_suite(load_config(p_toml), out, progress=False)
    curves = pd.read_csv(out / "curves.csv.gz")
    last = curves.sort_values("x").groupby("sample_id").tail(1).set_index("sample_id")["value"]
    got = torch.tensor(last.loc[ds.sample_ids].to_numpy(), dtype=torch.float32)
    assert torch.allclose(got, p.max(1).values, atol=1e-5)


@pytest.mark.parametrize("key", ["target", "explain_target", "score_target"])
def test_target_keys_are_validated(key):
    with pytest.raises(ConfigError, match=rf"\[suite\] {key} must be 'label' or 'predicted', got 'oracle'"):
        config_from_dict({"suite": {key: "oracle"}})
    with pytest.raises(ConfigError, match=rf"\[suite\] {key} must be str"):
        config_from_dict({"suite": {key: 1}})


def test_resolution_without_explicit_keys_keeps_the_old_meaning():
    cfg = config_from_dict({"suite": {"target": "label"}})
    assert (cfg.explained, cfg.scored) == ("label", "label")
    cfg = config_from_dict({"suite": {"explain_target": "predicted", "score_target": "label"}})
    assert (cfg.explained, cfg.scored) == ("predicted", "label")


@pytest.mark.parametrize("suite", ["otsuki2024-imagenet", "otsuki2024-cub"])
def test_otsuki_suites_explain_the_prediction_and_score_the_label(suite):
    cfg = load_config(find_suite(suite))
    assert (cfg.explained, cfg.scored) == ("predicted", "label")
    for m in cfg.methods:
        if cfg.method_base(m).startswith("lrp_resnet"):
            params = cfg.method_overrides(m)
            assert params.get("input_rule") == "ones" and params.get("maxpool") == "avg2", m
