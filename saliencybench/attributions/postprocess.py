"""Composable post-processing of attribution maps.

Steps are strings applied in order, so two registry entries that differ only in
post-processing share one implementation:

- ``sum`` / ``abs_sum`` / ``max`` / ``abs_max``: channel reduction to (B,1,H,W);
- ``abs``, ``positive`` (ReLU), ``negative`` (ReLU of the negation);
- ``gauss:K``: Gaussian smoothing with a K x K kernel and std K/4 (S-IntGrad / S-IxG,
  Rao et al. 2022 §5.2);
- ``quantize:Q``: heat quantization to Q levels with step (max-min)/(Q-1) per sample
  (Otsuki et al. 2024 Eq. 8 as implemented by the authors' code);
- ``upsample``: bilinear resize to the input size (applied implicitly to smaller maps).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

CHANNEL_REDUCTIONS = {"sum", "abs_sum", "max", "abs_max"}


def reduce_channels(a: Tensor, how: str = "sum") -> Tensor:
    if how == "sum":
        return a.sum(1, keepdim=True)
    if how == "abs_sum":
        return a.abs().sum(1, keepdim=True)
    if how == "max":
        return a.amax(1, keepdim=True)
    if how == "abs_max":
        return a.abs().amax(1, keepdim=True)
    raise ValueError(f"unknown channel reduction '{how}'")


def gaussian_kernel1d(size: int, sigma: float, *, device=None, dtype=torch.float32) -> Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_smooth(a: Tensor, kernel: int, sigma: float | None = None) -> Tensor:
    """Separable Gaussian blur of (B,C,H,W) maps, zero padding ('same' size).

    Default std is K/4 as in Rao et al. 2022 (S-IntGrad, S-IxG).
    """
    if kernel <= 1:
        return a
    sigma = kernel / 4.0 if sigma is None else sigma
    k = gaussian_kernel1d(kernel, sigma, device=a.device, dtype=a.dtype)
    c = a.shape[1]
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, kernel)
    ky = k.view(1, 1, -1, 1).expand(c, 1, kernel, 1)
    pad = kernel // 2
    extra = 1 - kernel % 2  # even kernels: pad one less on the right/bottom
    out = F.conv2d(F.pad(a, (pad, pad - extra, 0, 0)), kx, groups=c)
    out = F.conv2d(F.pad(out, (0, 0, pad, pad - extra)), ky, groups=c)
    return out


def heat_quantize(a: Tensor, levels: int = 8) -> Tensor:
    """Heat Quantization (Otsuki et al. 2024, Eq. 8, with the authors' step).

    Per sample, ``alpha = min + floor((a - min) / step) * step`` with
    ``step = (max - min) / (Q - 1)``: at most Q values, the maximum lands on the top level
    exactly (the printed Eq. 8 divides by Q and multiplies by Q, off by one against the
    official code). Keeping Eq. 8's ``min +`` offset leaves the map in its own units, so the
    pixel ranking (Insertion / Deletion) is that of the level index while relevance near 0
    stays near 0 and positive-mass metrics (mass in mask, pointing game, localization) see
    the sign of the relevance rather than a map shifted to be positive everywhere.
    Constant maps are returned unchanged.
    """
    if levels < 2:
        raise ValueError("heat quantization needs at least 2 levels")
    flat = a.flatten(1)
    lo = flat.min(1).values.view(-1, *([1] * (a.ndim - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (a.ndim - 1)))
    step = (hi - lo) / (levels - 1)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    q = torch.floor((a - lo) / safe).clamp_(0, levels - 1)
    # (max - min) / step can round to just below Q - 1 (and differ between a batched and a
    # single call): the maximum is put on the top level explicitly.
    q = torch.where(a >= hi, torch.full_like(q, levels - 1), q)
    return torch.where(step > 0, lo + q * safe, a)


def apply_postprocess(
    a: Tensor, steps: Sequence[str], *, size: Sequence[int] | None = None, reduce: bool = True
) -> Tensor:
    """Apply ``steps`` to (B,C,h,w) maps; the result is upsampled to ``size`` if smaller.

    ``reduce=False`` gives the signed per-channel maps that masked input accuracy needs (Lee &
    Chang, Algorithm 1 and Eq. 11): channel reductions and absolute values (``abs``, and the
    ``abs`` of ``abs_sum`` / ``abs_max``) are skipped; every other step is applied."""
    for step in steps:
        name, _, arg = step.partition(":")
        if name in CHANNEL_REDUCTIONS:
            if reduce:
                a = reduce_channels(a, name)
        elif name == "abs":
            if reduce:
                a = a.abs()
        elif name == "positive":
            a = a.clamp(min=0)
        elif name == "negative":
            a = (-a).clamp(min=0)
        elif name == "gauss":
            a = gaussian_smooth(a, int(arg))
        elif name == "quantize":
            a = heat_quantize(a, int(arg or 8))
        elif name == "upsample":
            pass
        else:
            raise ValueError(f"unknown post-processing step '{step}'")
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    return a
