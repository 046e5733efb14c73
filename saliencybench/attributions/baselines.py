"""Baselines that any real attribution method should beat: ``random`` and ``center``."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from saliencybench.core.registry import register_method
from saliencybench.core.seeding import per_sample_rand


def random_map(model: nn.Module, x: Tensor, target: Tensor, *, seeds: Sequence[int]) -> Tensor:
    """Uniform [0,1) noise, one independent map per sample from its seed; (B,1,H,W).

    A sanity baseline (the random attribution of Adebayo et al. 2018 / Hooker et al. 2019
    style checks). Defaults: none (``seeds`` is supplied by the runner, one per sample)."""
    return per_sample_rand(seeds, (1, *x.shape[-2:]), x.device, x.dtype)


def center_map(model: nn.Module, x: Tensor, target: Tensor, *, sigma: float = 0.25) -> Tensor:
    """A centred isotropic Gaussian with std ``sigma * min(H, W)`` (the centre bias of
    natural-image datasets), identical for every sample; (B,1,H,W).

    Defaults: ``sigma=0.25`` (the benchmark's choice for a sanity baseline, no paper value:
    a quarter of the image side, the centre bias against which pointing-game scores of
    Zhang et al. 2018 are usually read)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    s = sigma * min(h, w)
    ys = torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2
    xs = torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2
    g = torch.exp(-(ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2) / (2 * s * s))
    return g.expand(x.shape[0], 1, h, w).clone()


register_method("random", family="baseline", paper="sanity baseline",
                postprocess=("sum",), stochastic=True)(random_map)
register_method("center", family="baseline", paper="sanity baseline (centre bias)",
                defaults={"sigma": 0.25}, postprocess=("sum",))(center_map)
