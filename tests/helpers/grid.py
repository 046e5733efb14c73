"""A 10-class toy base dataset whose images say their class, and models that read it (grid tests)."""

from __future__ import annotations

import torch
from torch import nn

from saliencybench.core.types import Normalization, SampleSet

K = 10
NORM = Normalization((0.0,) * K, (1.0,) * K)


class MeanNet(nn.Module):
    """K-channel images; logit c is (about) the mean of channel c, times a scale."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(K, K, 3, padding=1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.mul_(0.01)
            self.features[0].weight[:, :, 1, 1] += torch.eye(K)
            self.features[0].bias.zero_()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(K, K)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(K))
            self.fc.bias.zero_()
        self.sb_layers = {"input": None, "middle": "features.0", "final": "features.1", "cam": "features.1"}

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def make_base(n: int = 240, seed: int = 0) -> tuple[SampleSet, nn.Module]:
    """Image i of class i % K is a one-hot channel times a scale from 0.5 to 14, so the
    confidence grows with i; every 10th label is wrong (the model predicts i % K)."""
    model = MeanNet().eval()
    g = torch.Generator().manual_seed(seed)
    cls = torch.arange(n) % K
    scale = torch.linspace(0.5, 14.0, n).view(n, 1, 1, 1)
    x = torch.nn.functional.one_hot(cls, K).float().view(n, K, 1, 1) * scale
    x = x + 0.05 * torch.randn(n, K, 8, 8, generator=g)
    y = cls.clone()
    y[::10] = (y[::10] + 1) % K
    ids = [f"b{i:04d}" for i in range(n)]
    return SampleSet(x, y, normalization=NORM, num_classes=K, sample_ids=ids, name="toybase"), model


class ScaledNet(MeanNet):
    """MeanNet with logits scaled by ``s``: the same predictions at other confidences."""

    def __init__(self, s: float) -> None:
        super().__init__()
        with torch.no_grad():
            self.fc.weight.mul_(s)
