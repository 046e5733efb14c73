"""Small models and state snapshots shared by the attribution-method tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck


def builtin_methods() -> list[str]:
    """Registered methods implemented in the package (test modules register deliberately broken toys)."""
    from saliencybench.core.registry import METHODS

    return [e.name for e in METHODS if getattr(e.obj, "__module__", "").startswith("saliencybench.")]


# Cheaper settings for expensive methods (same code paths, fewer steps / samples).
FAST = {
    "integrated_gradients": {"steps": 6},
    "s_intgrad": {"steps": 6},
    "smoothgrad": {"noise_samples": 3},
    "guided_ig": {"steps": 3},
    "dga": {"steps": 3},
    "dga_w": {"steps": 3},
    "dga_e": {"steps": 3},
    "rise": {"n_masks": 32},
}


class TinyResNet(nn.Module):
    """conv-BN-ReLU, max-pool, two torchvision Bottlenecks (projection skip, then identity
    skip; each calls its one ReLU module three times), avg-pool, linear. 3x32x32 -> 5."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.layer1 = Bottleneck(8, 4, stride=2, downsample=down)
        self.layer2 = Bottleneck(16, 4)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.sb_layers = {"input": None, "middle": "layer1", "final": "layer2", "cam": "layer2"}
        # non-trivial BN statistics so eval-mode BN is not the identity
        g = torch.Generator().manual_seed(1)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.data.uniform_(0.5, 1.5, generator=g)
                m.bias.data.uniform_(-0.2, 0.2, generator=g)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return TinyResNet().eval()


def model_state(model: nn.Module) -> dict[str, Any]:
    """Everything a method must leave unchanged: values, hooks, flags, modes, grads."""
    hook_attrs = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                  "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
    return {
        "values": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "hooks": {n: tuple(len(getattr(m, a, {}) or {}) for a in hook_attrs)
                  for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grads": {n: p.grad is None for n, p in model.named_parameters()},
        "tensor_hooks": {n: len(p._backward_hooks or {}) for n, p in model.named_parameters()},
    }


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in ("hooks", "requires_grad", "training", "grads", "tensor_hooks"):
        assert before[key] == after[key], f"model {key} changed"
    assert before["values"].keys() == after["values"].keys()
    for k, v in before["values"].items():
        assert torch.equal(v, after["values"][k]), f"model tensor {k} changed"
