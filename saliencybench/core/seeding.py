"""Seeds that do not depend on process, platform or batch layout."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, identical across processes and platforms."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def per_sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, so stochastic methods do not depend on batch layout."""
    gens = []
    for s in seeds:
        g = torch.Generator()
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def per_sample_randn(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, *shape) standard normal noise, sample b drawn from its own seeded generator."""
    gens = per_sample_generators(seeds)
    return torch.stack([torch.randn(*shape, generator=g, dtype=dtype) for g in gens]).to(device)


def per_sample_rand(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, *shape) uniform [0,1) noise, sample b drawn from its own seeded generator."""
    gens = per_sample_generators(seeds)
    return torch.stack([torch.rand(*shape, generator=g, dtype=dtype) for g in gens]).to(device)
