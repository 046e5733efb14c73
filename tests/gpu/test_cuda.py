"""CUDA parity: every registered method, and the runner with every native metric, give on a GPU
what they give on the CPU, and leave the model (on the GPU) unchanged.

CI has no GPU, so these tests are skipped there; on a GPU machine run
``python -m pytest tests/gpu/test_cuda.py -v``. Parity is checked in float64, where cuDNN / cuBLAS
and the CPU kernels agree to rounding (float32 convolutions on a GPU may use TF32).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from helpers.methods import FAST, assert_same_state, builtin_methods, model_state, tiny_resnet
from saliencybench.attributions.base import compute_attribution
from saliencybench.benchmark.config import config_from_dict
from saliencybench.benchmark.results import read_scores
from saliencybench.benchmark.runner import run_suite
from saliencybench.core.errors import NotApplicableError

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")



def _inputs(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64), torch.arange(n) % 5


@pytest.mark.parametrize("name", builtin_methods())
def test_method_on_cuda_equals_cpu(name: str) -> None:
    cpu_model = tiny_resnet().double()
    x, t = _inputs()
    seeds = [10, 11, 12, 13]
    try:
        want = compute_attribution(name, cpu_model, x, t, params=FAST.get(name), seeds=seeds)
    except NotApplicableError as e:
        pytest.skip(f"{name} does not apply to this model: {e}")
    gpu_model = copy.deepcopy(cpu_model).cuda()
    before = model_state(gpu_model)
    got = compute_attribution(name, gpu_model, x.cuda(), t.cuda(), params=FAST.get(name), seeds=seeds)
    assert got.device.type == "cuda" and got.dtype == want.dtype
    assert_same_state(before, model_state(gpu_model))
    scale = float(want.abs().max()) or 1.0
    torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-9 * scale)


def test_float32_cuda_maps_close_to_cpu() -> None:
    """In float32 (TF32 allowed, as by default) the gradient maps stay close to the CPU's."""
    cpu_model = tiny_resnet()
    x, t = _inputs()
    x = x.float()
    for name in ("saliency", "integrated_gradients", "gradcam", "occlusion", "lrp_epsilon"):
        want = compute_attribution(name, cpu_model, x, t, params=FAST.get(name))
        got = compute_attribution(name, copy.deepcopy(cpu_model).cuda(), x.cuda(), t.cuda(), params=FAST.get(name))
        err = float((got.cpu() - want).abs().max() / want.abs().max().clamp_min(1e-12))
        assert err < 2e-2, (name, err)


SUITE = {
    "suite": {
        "name": "cuda-parity", "datasets": ["synthetic"], "models": ["sb_resnet", "sb_vgg", "sb_nibvgg"],
        "methods": ["saliency", "integrated_gradients", "gradcam", "scorecam", "occlusion", "rise", "lrp_epsilon",
                    "lrp_resnet", "random"],
        "metrics": ["insertion", "deletion", "id_score", "lerf", "morf", "mass_in_mask", "pointing_game",
                    "conservation_error"],
        "n_samples": 8, "batch_size": 8, "seed": 0, "target": "label",
    },
    "methods": {"integrated_gradients": {"steps": 8}, "rise": {"n_masks": 64}},
    "metrics": {m: {"pixels_per_step": 256} for m in ("insertion", "deletion", "id_score", "lerf", "morf")},
}


@pytest.mark.slow
def test_suite_on_cuda_matches_cpu(tmp_path) -> None:
    """The runner end to end (zoo models, native metrics) on cuda vs cpu in float32, TF32 off.

    Every (model, method, metric, sample) has the same status on both devices, also with bf16
    autocast. Scores: float-level differences in a map can reorder near-tied pixels or flip a
    near-zero map between "all zero" (random order) and "a few tiny positives" (those first), so
    single samples may move a lot; the bulk must not: median difference < 1e-3, at most 5% of
    the samples beyond 1e-2, means per (model, method, metric) within 0.05 (pointing game, 0/1
    per sample, is held only to the first two).
    """
    cfg = config_from_dict(copy.deepcopy(SUITE))
    run_suite(cfg, tmp_path / "cpu", device="cpu", progress=False)
    run_suite(cfg, tmp_path / "gpu", device="cuda", progress=False, tf32=False)  # as `run --no-tf32`
    keys = ["dataset", "model", "method", "metric", "sample_id"]
    a = read_scores(tmp_path / "cpu").set_index(keys).sort_index()
    b = read_scores(tmp_path / "gpu").set_index(keys).sort_index()
    assert a.index.equals(b.index)
    differ = a["status"] != b["status"]
    assert not differ.any(), a.loc[differ, ["status"]].join(b.loc[differ, ["status"]], rsuffix="_cuda")
    ok = a["status"] == "ok"
    bounded = ok & ~a.index.get_level_values("metric").isin(["conservation_error"])
    diff = (a.loc[bounded, "value"] - b.loc[bounded, "value"]).abs().to_numpy()
    assert np.nanmedian(diff) < 1e-3
    assert np.mean(diff > 1e-2) < 0.05, np.sort(diff)[-20:]
    # pointing game is 0/1 per sample (one argmax near-tie flips 1/8 of a mean): not averaged here
    cont = bounded & (a.index.get_level_values("metric") != "pointing_game")
    ma = a.loc[cont].groupby(level=["model", "method", "metric"])["value"].mean()
    mb = b.loc[cont].groupby(level=["model", "method", "metric"])["value"].mean()
    assert float((ma - mb).abs().max()) < 0.05, (ma - mb).abs().sort_values().tail(10)

    cfg_bf16 = config_from_dict({**copy.deepcopy(SUITE), "suite": {**SUITE["suite"], "autocast": "bf16"}})
    run_suite(cfg_bf16, tmp_path / "bf16", device="cuda", progress=False)
    c = read_scores(tmp_path / "bf16").set_index(keys).sort_index()
    assert c.index.equals(b.index)
    differ = c["status"] != b["status"]
    assert not differ.any(), c.loc[differ, ["status"]].join(b.loc[differ, ["status"]], rsuffix="_fp32")
