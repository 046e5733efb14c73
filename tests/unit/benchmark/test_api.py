"""The Python API: ``saliencybench.evaluate`` and ``saliencybench.leaderboard``.

``evaluate`` must be the runner (same rows as a suite run), score precomputed maps, take
DataLoaders, reject bad input clearly and leave the user's model as it was; the README's
example is extracted and run here, so README and code cannot drift apart.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import saliencybench as sb
from helpers import REPO
from saliencybench.benchmark.config import SuiteConfig
from saliencybench.benchmark.results import SCORE_COLUMNS, read_curves, read_scores
from saliencybench.benchmark.runner import run_suite
from saliencybench.core.registry import UnknownNameError

README = REPO / "README.md"
FAST = ["insertion", "deletion", {"del16": {"base": "deletion", "pixels_per_step": 16}}]


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 12, 12, generator=g)
    y = torch.arange(6) % 4
    return _tiny_model(), x, y


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## Python API (notebooks)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the README's Python API section has one python example"
    return blocks[0]


def test_readme_example_runs():
    code = readme_example()
    assert "sb.evaluate(" in code and "sb.leaderboard(" in code and len(code.strip().splitlines()) <= 12
    ns: dict = {}
    printed: list[str] = []
    ns["print"] = lambda *a, **k: printed.append(" ".join(map(str, a)))
    exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own README
    scores = ns["scores"]
    assert list(scores.columns) == SCORE_COLUMNS
    assert set(scores["method"]) == {"saliency", "gradcam", "ig16", "oracle"}
    assert set(scores["metric"]) == {"insertion", "deletion", "id_score", "mass_in_mask"}
    assert len(scores) == 4 * 4 * 8 and set(scores["status"]) == {"ok"}
    mean = scores.groupby(["method", "metric"])["value"].mean()
    assert mean[("oracle", "mass_in_mask")] == pytest.approx(1.0)  # the object mask is all inside itself
    assert mean[("oracle", "mass_in_mask")] > mean[("saliency", "mass_in_mask")]
    assert "| `oracle` |" in printed[0] and "mass_in_mask ↑" in printed[0] and "deletion ↓" in printed[0]


def test_dataframe_equals_what_the_runner_writes(tmp_path):
    """The same suite through the runner (``saliencybench run``) and through ``evaluate``:
    identical rows and curves, the same forward passes and attribution calls."""
    from helpers.toy import ToyNet, register_all, toy_dataset

    register_all()
    metrics = ["insertion", "deletion", "lerf", "mass_in_mask"]
    ins16 = {"base": "insertion", "pixels_per_step": 16}
    sg4 = {"base": "smoothgrad", "noise_samples": 4}
    cfg = SuiteConfig(name="api-eq", datasets=["toy"], models=["toy_net"],
                      methods=["saliency", "gradcam", "sg4", "toy_nan"], metrics=metrics + ["ins16"],
                      n_samples=12, batch_size=4, chunk_size=8, seed=3, device="cpu", figures=False,
                      method_params={"sg4": sg4}, metric_params={"ins16": ins16})
    manifest = run_suite(cfg, tmp_path / "run", progress=False)
    want_s, want_c = read_scores(tmp_path / "run"), read_curves(tmp_path / "run")

    data = toy_dataset(n_samples=12)
    scores, curves = sb.evaluate(
        ToyNet(), data.x, data.y, masks=data.mask, normalization=data.normalization, sample_ids=data.sample_ids,
        methods=["saliency", "gradcam", {"sg4": sg4}, "toy_nan"], metrics=metrics + [{"ins16": ins16}],
        batch_size=4, seed=3, device="cpu", return_curves=True,
        suite_name="api-eq", dataset_name="toy", model_name="toy_net")
    pd.testing.assert_frame_equal(scores, want_s)
    pd.testing.assert_frame_equal(curves, want_c)
    assert "nonfinite_attribution" in set(scores[scores.method == "toy_nan"]["status"])
    assert set(scores[scores.method != "toy_nan"]["status"]) == {"ok"}
    got = scores.attrs["manifest"]
    assert got["forward_passes"] == manifest["forward_passes"]  # insertion / lerf share forwards alike
    assert got["attribution_calls"] == manifest["attribution_calls"] == {
        "saliency": 12, "gradcam": 12, "sg4": 12, "toy_nan": 12}
    # a SampleSet is accepted as it is (its targets, masks, sample ids and normalisation)
    again = sb.evaluate(ToyNet(), data, methods="saliency", metrics=["insertion"], batch_size=4, seed=3,
                        suite_name="api-eq", model_name="toy_net")
    pd.testing.assert_frame_equal(
        again, want_s[(want_s.method == "saliency") & (want_s.metric == "insertion")].reset_index(drop=True))


def test_precomputed_attributions_are_scored_and_ranked(tiny):
    model, x, y = tiny
    sal = sb.attribute("saliency", model, x, y)                       # (N,1,H,W)
    bad = sal[:, 0].clone()                                           # (N,H,W) with one broken map
    bad[2, 0, 0] = float("nan")
    scores = sb.evaluate(model, x, y, methods=["saliency"], metrics=FAST + ["mia"],
                         attributions={"mine": sal, "mine_nan": bad, "mine_rgb": sal.expand(-1, 3, -1, -1) / 3})
    s = scores.set_index(["method", "metric", "sample_id"]).sort_index()
    for metric in ("insertion", "deletion", "del16"):
        ref = s.loc[("saliency", metric), "value"].to_numpy()
        np.testing.assert_allclose(s.loc[("mine", metric), "value"].to_numpy(), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.loc[("mine_rgb", metric), "value"].to_numpy(), ref, rtol=1e-5, atol=1e-6)
        st = s.loc[("mine_nan", metric), "status"]
        assert st.loc["000002"] == "nonfinite_attribution" and (st.drop("000002") == "ok").all()
    # MIA re-runs the method at masked inputs: precomputed maps get no rows, the method does
    assert set(scores[scores.metric == "mia"]["method"]) == {"saliency"}
    md = sb.leaderboard(scores)
    assert "| `mine` |" in md and "| `mine_nan` |" in md and "nonfinite_attribution: 1" in md


def test_dataloader_input_matches_tensors(tiny):
    model, x, y = tiny
    mask = (torch.rand(6, 12, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    kw = dict(methods=["saliency"], metrics=FAST + ["mass_in_mask"])
    want = sb.evaluate(model, x, y, masks=mask, **kw)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, mask), batch_size=4)
    pd.testing.assert_frame_equal(sb.evaluate(model, loader, **kw), want)
    xy = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    got = sb.evaluate(model, xy, masks=mask, **kw)
    pd.testing.assert_frame_equal(got, want)


def test_model_is_left_unchanged(tiny, tmp_path):
    model, x, y = tiny
    model.train()
    model[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    methods = ["saliency", "integrated_gradients", {"gc": {"base": "gradcam", "layer": "2"}}]
    scores = sb.evaluate(model, x, y, methods=methods, metrics=["insertion", "mia"], out=tmp_path / "keep")
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    assert set(scores["status"]) == {"ok"}
    # out= keeps the results directory, which is exactly what was returned
    pd.testing.assert_frame_equal(read_scores(tmp_path / "keep"), scores)
    assert (tmp_path / "keep" / "run.json").is_file()


def test_cam_without_a_known_layer_gets_a_clear_status(tiny):
    model, x, y = tiny
    scores = sb.evaluate(model, x, y, methods=["gradcam", "lrp_resnet"], metrics=["insertion"])
    status = set(scores["status"])
    assert len(status) == 1 and "no layer 'cam'" in status.pop()
    assert "sb_layers" in scores["status"].iloc[0]
    assert "lrp_resnet" not in set(scores["method"])  # not applicable: no rows, reason in the manifest
    assert "data/model/lrp_resnet" in scores.attrs["manifest"]["not_applicable"]


def test_target_predicted_without_labels(tiny):
    model, x, y = tiny
    pred = model(x).argmax(1)
    a = sb.evaluate(model, x, None, methods=["saliency"], metrics=["insertion"], target="predicted")
    b = sb.evaluate(model, x, pred, methods=["saliency"], metrics=["insertion"])
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(inputs=torch.randn(6, 12, 12)), ValueError, r"inputs must be \(N,C,H,W\)"),
    (dict(targets=torch.arange(5)), ValueError, "targets has 5 entries for 6 inputs"),
    (dict(targets=torch.tensor([0, 1, 2, 3, 4, 9])), ValueError, r"targets must lie in \[0, 4\)"),
    (dict(masks=torch.ones(6, 1, 8, 8)), ValueError, r"masks must be \(N,H,W\) or \(N,1,H,W\)"),
    (dict(masks=torch.ones(5, 12, 12)), ValueError, "masks must be"),
    (dict(methods=["saliencyy"]), UnknownNameError, "did you mean 'saliency'"),
    (dict(metrics=["insertoin"]), UnknownNameError, "did you mean 'insertion'"),
    (dict(methods=[{"x": {"base": "gradcamm"}}]), UnknownNameError, "did you mean 'gradcam'"),
    (dict(attributions={"mine": torch.ones(5, 12, 12)}), ValueError, r"attributions\['mine'\] has shape"),
    (dict(attributions={"saliency": torch.ones(6, 12, 12)}), ValueError, "also a method name"),
    (dict(methods=[]), ValueError, "nothing to score"),
    (dict(inputs=torch.randn(6, 1, 12, 12)), ValueError, "the model cannot run on inputs"),
    (dict(methods=["saliency", "saliency"]), ValueError, "listed twice"),
])
def test_bad_input_raises_clearly(tiny, kwargs, error, match):
    model, x, y = tiny
    args = dict(inputs=x, targets=y, methods=["saliency"], metrics=["insertion"])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sb.evaluate(model, args.pop("inputs"), args.pop("targets"), **args)


def test_out_must_be_new_or_empty(tiny, tmp_path):
    model, x, y = tiny
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "scores.csv").write_text("x")
    with pytest.raises(ValueError, match="new or empty directory"):
        sb.evaluate(model, x, y, methods=["saliency"], metrics=["insertion"], out=tmp_path / "old")


def test_leaderboard_directions_and_errors():
    df = pd.DataFrame({"suite": "s", "dataset": "d", "model": "m", "method": ["a", "b"] * 2,
                       "metric": ["deletion"] * 2 + ["mine"] * 2, "sample_id": "0",
                       "value": [0.1, 0.2, 0.1, 0.2], "status": "ok"})
    with pytest.raises(ValueError, match=r"direction of metric\(s\) \['mine'\] unknown"):
        sb.leaderboard(df)
    md = sb.leaderboard(df, higher_is_better={"mine": False})
    assert "deletion ↓" in md and "mine ↓" in md
    assert "| `a` | **0.100 ± 0.000** (1) | **0.100 ± 0.000** (1) | 1.00 |" in md
    with pytest.raises(ValueError, match="lacks columns"):
        sb.leaderboard(df.drop(columns="value"))


def test_exported():
    assert "evaluate" in sb.__all__ and "leaderboard" in sb.__all__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_other_than_the_models_runs_a_copy(tiny):
    model, x, y = tiny
    kw = dict(methods=["saliency"], metrics=["insertion"])
    on_cuda = sb.evaluate(model, x, y, device="cuda", **kw)
    assert next(model.parameters()).device.type == "cpu"  # the model itself never moved
    assert on_cuda.attrs["manifest"]["device"].startswith("cuda")
    on_cpu = sb.evaluate(model, x, y, **kw)
    np.testing.assert_allclose(on_cuda["value"], on_cpu["value"], atol=2e-3)


def test_numpy_inputs_and_maps_as_quantus_users_pass_them(tiny):
    model, x, y = tiny
    sal = sb.attribute("saliency", model, x, y)
    want = sb.evaluate(model, x, y, metrics=["insertion"], attributions={"mine": sal})
    got = sb.evaluate(model, x.double().numpy(), y.numpy(), metrics=["insertion"],
                      attributions={"mine": sal.double().numpy()})
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-5, atol=1e-6)


def test_runner_provide_attributions_across_chunks(tiny, tmp_path):
    """Precomputed maps go into the cache chunk by chunk; the method itself is never called."""
    from saliencybench.api import precomputed_entry
    from saliencybench.benchmark.runner import Runner
    from saliencybench.core.types import IDENTITY_NORMALIZATION, SampleSet

    model, x, y = tiny
    model.eval()
    samples = SampleSet(x, y, normalization=IDENTITY_NORMALIZATION, num_classes=4, name="d")
    cfg = SuiteConfig(name="s", datasets=["d"], models=["m"], methods=["saliency", "pre"], metrics=["insertion"],
                      n_samples=None, batch_size=2, chunk_size=4, device="cpu", figures=False)
    runner = Runner(cfg, tmp_path, progress=False, models={"m": model}, samples={"d": samples},
                    extra_methods={"pre": precomputed_entry("pre")})
    runner.provide_attributions("d", "m", "pre", sb.attribute("saliency", model, x, y))
    manifest = runner.run()
    s = read_scores(tmp_path).set_index(["method", "sample_id"])["value"]
    np.testing.assert_allclose(s.loc["pre"].to_numpy(), s.loc["saliency"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert manifest["attribution_calls"] == {"saliency": 6, "pre": 0}
    assert len(list((tmp_path / "cache" / "d" / "m").glob("pre-*/*.pt"))) == 2  # chunks of 4 + 2 samples
