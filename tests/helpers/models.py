"""Small deterministic models for fast unit tests."""

from __future__ import annotations

import torch
from torch import nn


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


class SmallRFNet(nn.Module):
    """Two bias-free 3x3 convs + GAP + fc: zero input gives zero features (small receptive field)."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, k)
        self.sb_layers = {"input": None, "middle": "features.1", "final": "features.4", "cam": "features.4"}

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))
