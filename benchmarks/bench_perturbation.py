"""Perturbation engine vs Quantus on identical work (pytest-benchmark; report ratios).

Run: ``python -m pytest benchmarks/bench_perturbation.py --benchmark-only -q``

Settings shared by both sides: 8 images 3x48x48 in [0,1] with a black pixel (so Quantus's
"black" = per-sample minimum = 0 = our black), identity normalisation, a random tie-free
(B,1,H,W) map, 48 pixels per step (Quantus: ``features_in_step = 3 * 48``, 48 curve points after
the first step), softmax of the label, one model.

- ``morf``: our MoRF vs Quantus ``PixelFlipping`` (target ratio <= 1.0).
- ``bundle``: our insertion + deletion + lerf + morf in one group (two curves of forwards) vs
  Quantus PixelFlipping (MoRF) + RegionPerturbation(order="lerf", 48 regions of 4x4) + two more
  PixelFlipping curves standing in for insertion / deletion (target ratio <= 0.6).
- ``throughput``: the engine's images/s (the four-curve bundle on a torchvision ResNet18,
  ``extra_info["images"]`` forwards) against the same model's plain forward passes at batch
  sizes 64-1024 (take the best); on CUDA 112x112 inputs, on CPU 48x48.

Everything runs on CUDA when it is available (Quantus gets ``device="cuda"``), else on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from saliencybench.core.registry import METRICS
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext

quantus = pytest.importorskip("quantus")
from saliencybench.metrics.quantus_adapter import import_quantus  # noqa: E402

import_quantus()  # numpy-2 shim for Quantus's np.trapz
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

B, H, K = 8, 48, 48  # images, side, pixels per step


class BenchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.f(x)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, H, H, generator=g)
    x[:, :, 0, 0] = 0
    y = torch.arange(B) % 10
    a = torch.randn(B, 1, H, H, generator=g)
    return BenchCNN().eval().to(DEVICE), x, y, a


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _ours(model, x, y, a, names, *, k=K, max_batch=256):
    ms = [METRICS.get(n).obj(name=n, kind=n, preset="none", substrate="black", pixels_per_step=k,
                             grid="inclusive", ties="stable") for n in names]
    x, y, a = x.to(DEVICE), y.to(DEVICE), a.to(DEVICE)
    ctx = EvalContext(model=model, batch=Batch(x, y, [str(i) for i in range(len(x))]), target=y,
                      normalization=IDENTITY_NORMALIZATION, num_classes=10, max_batch=max_batch)
    out = type(ms[0]).evaluate_group(ms, ctx, a)
    _sync()
    return out, ctx.forward_counter


def _pf(model, x, y, a):
    pf = quantus.PixelFlipping(features_in_step=3 * K, normalise=False, abs=False,
                               perturb_baseline="black", disable_warnings=True)
    return pf(model=model, x_batch=x, y_batch=y, a_batch=a, channel_first=True, softmax=True, device=DEVICE)


def _quantus_bundle(model, x, y, a):
    rp = quantus.RegionPerturbation(patch_size=4, order="lerf", regions_evaluation=H * H // K,
                                    normalise=False, abs=False, perturb_baseline="black",
                                    disable_warnings=True)
    out = [_pf(model, x, y, a),
           rp(model=model, x_batch=x, y_batch=y, a_batch=a, channel_first=True, softmax=True, device=DEVICE),
           _pf(model, x, y, -a), _pf(model, x, y, a)]
    return out


def test_morf_ours(benchmark, setup):
    model, x, y, a = setup
    out, counter = benchmark.pedantic(_ours, args=(model, x, y, a, ["morf"]), rounds=3, iterations=1)
    ref = np.asarray(_pf(model, x.numpy(), y.numpy(), a.numpy()))
    assert np.abs(out["morf"].curve[:, 1:].cpu().numpy() - ref).max() < 1e-4
    benchmark.extra_info["forwards"] = sum(counter.values())


def test_morf_quantus_pixelflipping(benchmark, setup):
    model, x, y, a = setup
    benchmark.pedantic(_pf, args=(model, x.numpy(), y.numpy(), a.numpy()), rounds=3, iterations=1)
    benchmark.extra_info["forwards"] = B * (H * H // K)


def test_bundle_ours(benchmark, setup):
    model, x, y, a = setup
    out, counter = benchmark.pedantic(_ours, args=(model, x, y, a, ["insertion", "deletion", "lerf", "morf"]),
                                      rounds=3, iterations=1)
    benchmark.extra_info["forwards"] = sum(counter.values())


def test_bundle_quantus(benchmark, setup):
    model, x, y, a = setup
    benchmark.pedantic(_quantus_bundle, args=(model, x.numpy(), y.numpy(), a.numpy()), rounds=2, iterations=1)
    benchmark.extra_info["forwards"] = B * (3 * (H * H // K) + H * H // K + 1)


@pytest.fixture(scope="module")
def tp_setup():
    from torchvision.models import resnet18

    n, side = (32, 112) if DEVICE == "cuda" else (4, 48)
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval().to(DEVICE)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, side, side, generator=g)
    y = torch.arange(n) % 10
    a = torch.randn(n, 1, side, side, generator=g)
    return model, x, y, a, side * side // 32  # 32 steps per curve


@pytest.mark.parametrize("max_batch", [256, 1024])
def test_throughput_engine_bundle(benchmark, tp_setup, max_batch):
    model, x, y, a, k = tp_setup
    if DEVICE == "cpu" and max_batch > 256:
        pytest.skip("on CPU the larger batches only cost time")
    out, counter = benchmark.pedantic(_ours, args=(model, x, y, a, ["insertion", "deletion", "lerf", "morf"]),
                                      kwargs={"k": k, "max_batch": max_batch}, rounds=3, iterations=1,
                                      warmup_rounds=1)
    benchmark.extra_info["images"] = sum(counter.values())


@pytest.mark.parametrize("batch", [64, 256, 512, 1024])
def test_throughput_plain_forward(benchmark, tp_setup, batch):
    """Forward passes alone (inference mode) over 1024 images of the same size, in batches of ``batch``."""
    from saliencybench.core.tensors import fast_layout

    model, x, *_ = tp_setup
    if DEVICE == "cpu" and batch > 256:
        pytest.skip("on CPU the larger batches only cost time")
    xb = fast_layout(x.to(DEVICE).repeat(-(-batch // len(x)), 1, 1, 1)[:batch])
    n = 1024 if DEVICE == "cuda" else 256

    @torch.inference_mode()
    def run():
        for _ in range(n // batch):
            model(xb)
        _sync()

    benchmark.extra_info["images"] = n
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
