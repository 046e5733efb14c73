"""Speed of the attribution methods against the reference libraries, on the same inputs.

Random-init torchvision ResNet18, 64x64 inputs, on CUDA when available. Compare the groups:

- occlusion: ours vs Captum Occlusion with its default settings (perturbations_per_eval=1),
  same window 16 / stride 8 (target: >= 5x faster);
- integrated_gradients: ours vs Captum IntegratedGradients, 50 steps (target: no slower);
- scorecam: our scorecam_pgc (the same work) vs pytorch-grad-cam ScoreCAM on layer4 (target: >= 2x faster);
- rise: 500 masks per image vs plain forward passes of the same number of images (images/s).

Run: ``python -m pytest benchmarks/bench_methods.py --benchmark-only --benchmark-group-by=group``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.models import resnet18

from saliencybench.attributions.base import compute_attribution

warnings.filterwarnings("ignore")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N_MASKS = 500
WARMUP = 1 if DEVICE == "cuda" else 0  # cuDNN picks its kernels on first use of a shape


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval().to(DEVICE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=g).to(DEVICE)
    t = torch.tensor([0, 1, 2, 3], device=DEVICE)
    return model, x, t


def _run(fn):
    def wrapped():
        out = fn()
        _sync()
        return out
    return wrapped


@pytest.mark.benchmark(group="occlusion")
def test_occlusion_ours(benchmark, setup):
    model, x, t = setup
    benchmark.pedantic(_run(lambda: compute_attribution(
        "occlusion", model, x, t, params={"window": 16, "stride": 8})), rounds=3, iterations=1, warmup_rounds=WARMUP)


@pytest.mark.benchmark(group="occlusion")
def test_occlusion_captum(benchmark, setup):
    from captum.attr import Occlusion

    model, x, t = setup
    occ = Occlusion(model)
    benchmark.pedantic(_run(lambda: occ.attribute(
        x, target=t, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8))),
        rounds=3, iterations=1, warmup_rounds=WARMUP)


@pytest.mark.benchmark(group="integrated_gradients")
def test_ig_ours(benchmark, setup):
    model, x, t = setup
    benchmark.pedantic(_run(lambda: compute_attribution(
        "integrated_gradients", model, x, t, params={"steps": 50, "internal_batch_size": 200})),
        rounds=3, iterations=1, warmup_rounds=WARMUP)


@pytest.mark.benchmark(group="integrated_gradients")
def test_ig_captum(benchmark, setup):
    from captum.attr import IntegratedGradients

    model, x, t = setup
    ig = IntegratedGradients(model)
    benchmark.pedantic(_run(lambda: ig.attribute(x, target=t, n_steps=50)),
                       rounds=3, iterations=1, warmup_rounds=WARMUP)


@pytest.mark.benchmark(group="scorecam")
def test_scorecam_ours(benchmark, setup):
    model, x, t = setup
    benchmark.pedantic(_run(lambda: compute_attribution(
        "scorecam_pgc", model, x[:2], t[:2], params={"layer": "layer4", "internal_batch_size": 256})),
        rounds=2, iterations=1, warmup_rounds=WARMUP)


@pytest.mark.benchmark(group="scorecam")
def test_scorecam_pytorch_grad_cam(benchmark, setup):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, t = setup
    targets = [ClassifierOutputTarget(int(c)) for c in t[:2]]

    def run():
        with ScoreCAM(model=model, target_layers=[model.layer4]) as cam:
            return cam(input_tensor=x[:2], targets=targets)

    benchmark.pedantic(_run(run), rounds=2, iterations=1, warmup_rounds=WARMUP)


@pytest.mark.benchmark(group="rise")
def test_rise_ours(benchmark, setup):
    model, x, t = setup
    benchmark.extra_info["images"] = x.shape[0] * N_MASKS
    benchmark.pedantic(_run(lambda: compute_attribution(
        "rise", model, x, t, params={"n_masks": N_MASKS}, seeds=[0, 1, 2, 3])),
        rounds=2, iterations=1, warmup_rounds=WARMUP)


@pytest.mark.benchmark(group="rise")
def test_rise_plain_forward_same_images(benchmark, setup):
    """Forward passes alone over the same number of images, in batches of 256, in the memory
    layout our forward-only paths use (channels-last on CPU), so the ratio is RISE's own cost."""
    from saliencybench.core.tensors import fast_layout

    model, x, t = setup
    n = x.shape[0] * N_MASKS
    batch = fast_layout(x.repeat(64, 1, 1, 1))

    @torch.no_grad()
    def run():
        for _ in range(n // batch.shape[0]):
            model(batch)

    benchmark.extra_info["images"] = n
    benchmark.pedantic(_run(run), rounds=2, iterations=1, warmup_rounds=WARMUP)
