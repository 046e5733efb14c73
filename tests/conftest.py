"""Shared fixtures: small deterministic models and inputs for fast unit tests."""

from __future__ import annotations

import pytest
import torch

from helpers.models import TinyCNN
from saliencybench.core.registry import DATASETS, METHODS, METRICS, MODELS, populate

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    return x, y


@pytest.fixture(autouse=True)
def isolated_registries():
    """Whatever a test registers is gone after it; the built-ins and the registrations that test
    modules make at import time stay. Tests never add to or remove from the registries by hand."""
    populate()
    saved = [(reg, reg.snapshot()) for reg in (METHODS, METRICS, DATASETS, MODELS)]
    yield
    for reg, snap in saved:
        reg.restore(snap)
