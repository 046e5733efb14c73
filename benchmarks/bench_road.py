"""ROAD noisy linear imputation: ours (batched conjugate gradients in torch) vs Quantus's
``noisy_linear_imputation`` (one scipy ``spsolve`` per image) on identical work.

Run: ``python -m pytest benchmarks/bench_road.py --benchmark-only -q -s``

Work: 32 images 3x64x64, the MoRF removal of a smooth random attribution map at 10/30/50/70/90%
of the pixels (Rong et al. 2022, Sec. 5: ROAD imputes at every removal fraction of the curve),
noise 0.01. Quantus gets the same images and removed indices, image by image, in float64 (its
solver's type); ours runs in float32 at the default ``rtol`` on the CPU (or CUDA when available).
``test_ratio`` times both once more and prints / records the speed ratio and the largest
difference of the noise-free imputations.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saliencybench.metrics.road import noisy_linear_impute

perturb = pytest.importorskip("quantus.functions.perturb_func")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, C, H = 32, 3, 64
FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


@pytest.fixture(scope="module")
def work() -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, C, H, H, generator=g)
    a = F.avg_pool2d(torch.rand(B, 1, H, H, generator=g), 9, 1, 4)
    order = a.flatten(1).sort(1, descending=True).values
    masks = [a >= order[:, int(f * H * H) - 1].view(-1, 1, 1, 1) for f in FRACTIONS]
    return x, masks


def _ours(x: torch.Tensor, masks: list[torch.Tensor], noise: float = 0.01) -> list[torch.Tensor]:
    g = torch.Generator(device=DEVICE).manual_seed(0)
    xd = x.to(DEVICE)
    out = [noisy_linear_impute(xd, m.to(DEVICE), noise_std=noise, generator=g) for m in masks]
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return out


def _quantus(x: torch.Tensor, masks: list[torch.Tensor], noise: float = 0.01) -> list[np.ndarray]:
    xs = x.double().numpy()
    return [np.stack([perturb.noisy_linear_imputation(xs[i], np.flatnonzero(m[i, 0].numpy()), noise=noise)
                      for i in range(B)]) for m in masks]


def test_road_ours(benchmark, work):
    benchmark.pedantic(_ours, args=work, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["device"] = DEVICE


def _ours_one_call(x: torch.Tensor, masks: list[torch.Tensor], noise: float = 0.01) -> torch.Tensor:
    """All fractions of the batch in one call, as the engine's ``road`` substrate solves a chunk."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    out = noisy_linear_impute(torch.cat([x] * len(masks)).to(DEVICE), torch.cat(masks).to(DEVICE),
                              noise_std=noise, generator=g)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return out


def test_road_ours_one_call(benchmark, work):
    benchmark.pedantic(_ours_one_call, args=work, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["device"] = DEVICE


def test_road_quantus(benchmark, work):
    benchmark.pedantic(_quantus, args=work, rounds=2, iterations=1)


def test_ratio(benchmark, work):
    def timed(fn, rounds: int) -> float:
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            fn(*work)
            best = min(best, time.perf_counter() - t)
        return best

    _ours(*work)  # warm-up
    t_ours, t_quantus, t_one = timed(_ours, 3), timed(_quantus, 2), timed(_ours_one_call, 3)
    ours = _ours(*work, noise=0.0)
    ref = _quantus(*work, noise=0.0)
    diff = max(float(np.abs(o.cpu().double().numpy() - r).max()) for o, r in zip(ours, ref))
    benchmark.extra_info.update(ours_s=t_ours, quantus_s=t_quantus, ratio=t_quantus / t_ours, max_abs_diff=diff)
    benchmark.extra_info.update(ours_one_call_s=t_one, ratio_one_call=t_quantus / t_one)
    print(f"\nROAD imputation, {B}x{C}x{H}x{H}, {len(FRACTIONS)} fractions, {DEVICE}: ours {t_ours:.3f} s, "
          f"Quantus {t_quantus:.3f} s, ratio {t_quantus / t_ours:.1f}x, max |diff| {diff:.1e}; "
          f"ours in one call {t_one:.3f} s, ratio {t_quantus / t_one:.1f}x")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert diff < 1e-3
