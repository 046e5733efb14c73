"""Shared fixtures: small deterministic models and inputs for fast unit tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


class TinyCNN(nn.Module):
    """conv-relu-pool x2 + linear; no reused modules; 3x32x32 -> 5 classes."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.sb_layers = {"input": None, "middle": "features.2", "final": "features.4", "cam": "features.4"}

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    return x, y
