"""ROAD noisy linear imputation (Rong et al. 2022, Sec. 4): exactness, batching, determinism,
and agreement with Quantus's ``noisy_linear_imputation`` on identical inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliencybench.metrics.road import ROAD_WEIGHTS, noisy_linear_impute

H = W = 24


def _ramp(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    i = torch.arange(H, dtype=dtype).view(-1, 1)
    j = torch.arange(W, dtype=dtype).view(1, -1)
    return torch.stack([0.3 * i + 0.7 * j + 0.1, -0.2 * i + 0.05 * j, 0.5 * j - 1.0 + 0 * i]).unsqueeze(0)


def test_linear_ramp_with_a_removed_block_is_recovered():
    # A linear function is its own 8-neighbour weighted mean (symmetric weights) away from the
    # border, so the block's exact solution is the ramp; tolerance 1e-6 (float64, rtol 1e-10).
    x = _ramp()
    removed = torch.zeros(1, 1, H, W, dtype=torch.bool)
    removed[..., 6:18, 8:20] = True
    out = noisy_linear_impute(x, removed, noise_std=0.0, rtol=1e-10)
    assert torch.allclose(out, x, atol=1e-6, rtol=0)


def test_ramp_along_a_full_height_band_is_recovered():
    # A band of columns touching the top and bottom border: the border rows drop their outside
    # neighbours, which are symmetric in j, so a ramp in j is still exact.
    j = torch.arange(W, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 3, H, W).clone() * 0.25
    removed = torch.zeros(1, 1, H, W, dtype=torch.bool)
    removed[..., :, 9:15] = True
    out = noisy_linear_impute(j, removed, noise_std=0.0, rtol=1e-10)
    assert torch.allclose(out, j, atol=1e-6, rtol=0)


def test_ramp_up_to_the_noise():
    x = _ramp()
    removed = torch.zeros(1, 1, H, W, dtype=torch.bool)
    removed[..., 6:18, 8:20] = True
    out = noisy_linear_impute(x, removed, noise_std=0.01, generator=torch.Generator().manual_seed(0))
    diff = (out - x)[removed.expand_as(x)]
    assert diff.abs().max() < 0.06 and 0.005 < diff.std() < 0.015


def test_single_pixel_is_the_weighted_mean_of_its_neighbours():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 9, 9, generator=g, dtype=torch.float64)
    removed = torch.zeros(2, 1, 9, 9, dtype=torch.bool)
    removed[0, 0, 4, 4] = True
    removed[1, 0, 2, 6] = True
    out = noisy_linear_impute(x, removed, noise_std=0.0)
    w = torch.tensor(ROAD_WEIGHTS, dtype=torch.float64)
    assert w.sum().item() == pytest.approx(1.0)
    for b, (r, c) in enumerate([(4, 4), (2, 6)]):
        want = (x[b, :, r - 1:r + 2, c - 1:c + 2] * w).sum((1, 2))
        assert torch.allclose(out[b, :, r, c], want, atol=1e-12)
    keep = ~removed.expand_as(x)
    assert torch.equal(out[keep], x[keep])


def test_corner_pixel_drops_the_outside_neighbours():
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    removed = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    removed[0, 0, 0, 0] = True
    out = noisy_linear_impute(x, removed, noise_std=0.0)
    want = (x[0, 0, 0, 1] / 6 + x[0, 0, 1, 0] / 6 + x[0, 0, 1, 1] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert out[0, 0, 0, 0].item() == pytest.approx(want.item(), abs=1e-12)


def _random_case(b: int = 5, frac: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, H, W, generator=g)
    removed = torch.rand(b, 1, H, W, generator=g) < frac
    return x, removed


def test_batch_equals_per_image():
    # Each image's system is independent; the solver's stopping rule is per system, so the batch
    # differs from single images only by float32 rounding (tolerance 1e-5).
    x, removed = _random_case()
    batch = noisy_linear_impute(x, removed, noise_std=0.0)
    single = torch.cat([noisy_linear_impute(x[i:i + 1], removed[i:i + 1], noise_std=0.0) for i in range(len(x))])
    assert torch.allclose(batch, single, atol=1e-5, rtol=0)


def test_deterministic_given_a_generator_and_keeps_dtype_and_device():
    x, removed = _random_case()
    a = noisy_linear_impute(x, removed, generator=torch.Generator().manual_seed(3))
    b = noisy_linear_impute(x, removed, generator=torch.Generator().manual_seed(3))
    c = noisy_linear_impute(x, removed, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == x.dtype and a.device == x.device and a.shape == x.shape
    assert torch.equal(x, _random_case()[0])  # the input is not modified


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_is_the_input_device():
    x, removed = _random_case()
    out = noisy_linear_impute(x.cuda(), removed.cuda(), generator=torch.Generator().manual_seed(0))
    assert out.device == x.cuda().device
    ref = noisy_linear_impute(x, removed, noise_std=0.0)
    assert torch.allclose(noisy_linear_impute(x.cuda(), removed.cuda(), noise_std=0.0).cpu(), ref, atol=1e-4)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        noisy_linear_impute(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError):
        noisy_linear_impute(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.bool))


@pytest.mark.parametrize("frac", [0.1, 0.5, 0.9])
def test_matches_quantus(frac):
    # Quantus solves the same system directly (scipy spsolve, float64); ours stops at a relative
    # residual of 1e-10 in float64 here: agreement to 1e-6. In float32 at the default rtol 1e-5
    # the two agree to about 2e-4 (the ROAD benchmark prints it).
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    x, removed = _random_case(b=3, frac=frac, seed=7)
    x = x.double()
    ours = noisy_linear_impute(x, removed, noise_std=0.0, rtol=1e-10)
    for i in range(len(x)):
        idx = np.flatnonzero(removed[i, 0].numpy())
        ref = perturb.noisy_linear_imputation(x[i].numpy(), idx, noise=0.0)
        assert np.allclose(ours[i].numpy(), ref, atol=1e-6, rtol=0)


def test_nothing_removed_and_everything_removed():
    x, _ = _random_case(b=2)
    none = torch.zeros(2, 1, H, W, dtype=torch.bool)
    assert torch.equal(noisy_linear_impute(x, none), x)
    # No known pixel at all: the system is singular; the solver leaves 0 (plus noise), where
    # Quantus's direct solve fails.
    out = noisy_linear_impute(x, ~none, noise_std=0.0)
    assert torch.equal(out, torch.zeros_like(x))
