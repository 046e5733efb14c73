"""No-implicit-bias (NIB) models of Lee & Chang 2021 (§2.2 and §4.1, Table 1).

A NIB model has no additive bias anywhere: conv / linear layers without bias, batch
normalisation without its mean and shift ("we removed all parameters corresponding to the mean
of batch normalization ... and the additive bias of all layers"), and only nonlinearities with
phi(0) = 0 whose Taylor remainder vanishes at a zero baseline (ReLU, MaxPool). Then
f(z0) = grad f(z0) . z0 (Lee & Chang 2021, Eq. 8), which is what makes GxI / DeepLIFT / IG satisfy the NIB
condition (Definition 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Lee & Chang 2021, Table 1. Integers are conv2d-3x3 (padding 1) output channels, "M" a 2x2/2 MaxPool;
#: every model ends with FC-4096, FC-4096, FC-num_classes. The layer counts (conv + linear)
#: are 7, 9, 11, 13 and 16 (Lee & Chang 2021, Table 3 / Table 8).
NIB_VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg13-6": [64, 64, "M", 128, 128, "M"],
    "vgg13-4": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
    "vgg13-2": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class NIBBatchNorm2d(nn.Module):
    """Batch normalisation without mean and shift (Lee & Chang 2021, §4.1): ``y = gamma * x / sqrt(var + eps)``.

    Training normalises by the batch's per-channel standard deviation (biased, as in
    BatchNorm) *without centring* ``x`` and tracks ``running_var`` (unbiased, momentum
    average); evaluation divides by ``sqrt(running_var + eps)``. The only parameter is the
    scale ``weight`` (gamma), so the layer is linear and bias-free at inference, zero maps to
    zero, and it folds into the preceding conv as a per-channel scale.

    For code that folds BatchNorm generically it exposes ``running_mean`` (a constant zero,
    not saved in the state dict) and ``bias = None``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = None
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("running_mean", torch.zeros(num_features), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"NIBBatchNorm2d expects (B,C,H,W), got {tuple(x.shape)}")
        if self.training:
            var = x.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_var.mul_(1.0 - self.momentum).add_(unbiased, alpha=self.momentum)
                self.num_batches_tracked.add_(1)
        else:
            var = self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        return x * scale.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, no mean, no bias"


class NIBVGG(nn.Module):
    """VGG with torchvision names (``features`` / ``avgpool`` / ``classifier``), no biases.

    ``avgpool`` is an adaptive average pool, by default to the feature map size that
    ``in_size`` gives (an identity at that size; averaging is linear and bias-free, so other
    sizes still work).
    """

    def __init__(self, features: nn.Sequential, out_hw: int, flat: int, hidden: int,
                 num_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((out_hw, out_hw))
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden, bias=False), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden, bias=False), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def nib_vgg(
    cfg_name: str,
    num_classes: int,
    in_size: int = 32,
    *,
    width: float = 1.0,
    hidden: int = 4096,
    dropout: float = 0.5,
    pool_hw: int | None = None,
) -> NIBVGG:
    """A NIB VGG of Lee & Chang 2021, Table 1 (``vgg13-6``, ``vgg13-4``, ``vgg13-2``, ``vgg13``, ``vgg16``).

    Args:
        cfg_name: configuration name (case-insensitive; a "nib_" / "nib " prefix is allowed).
        num_classes: size of the last FC layer (10 / 100 for CIFAR).
        in_size: input side (32 for CIFAR, 64 for the synthetic data); the first FC layer
            takes ``channels * (in_size / 2**pools)**2`` features.
        width: multiplier of every conv width (1.0 = the paper's); small default models use
            fractions.
        hidden: width of the two hidden FC layers (4096 in the paper).
        dropout: dropout between the FC layers (bias-free; inactive in eval mode).
        pool_hw: side of the adaptive average pool before the classifier; ``None`` keeps
            the feature map as it is at ``in_size`` (the paper's flatten), 1 is global
            average pooling (linear and bias-free too, so the model stays NIB).

    The ``features`` stack is conv(3x3, pad 1, no bias) -> NIBBatchNorm2d -> ReLU per conv,
    and MaxPool(2, 2) per "M".
    """
    key = cfg_name.lower().replace("nib_", "").replace("nib ", "").replace("_", "-").strip()
    if key not in NIB_VGG_CONFIGS:
        raise KeyError(f"unknown NIB VGG config '{cfg_name}'; choose from {sorted(NIB_VGG_CONFIGS)}")
    cfg = NIB_VGG_CONFIGS[key]
    layers: list[nn.Module] = []
    c_in, side = 3, int(in_size)
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            side //= 2
        else:
            c_out = max(1, int(round(int(item) * width)))
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                       NIBBatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
    if side < 1:
        raise ValueError(f"in_size {in_size} is too small for {key} ({cfg.count('M')} poolings)")
    hw = side if pool_hw is None else int(pool_hw)
    model = NIBVGG(nn.Sequential(*layers), hw, c_in * hw * hw, hidden, num_classes, dropout)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features) if m.out_features != num_classes else 0.01)
    return model
