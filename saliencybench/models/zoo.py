"""The default model zoo: three small CNNs trained on the embedded ``synthetic`` dataset.

- ``sb_resnet``: a ResNet of ``torchvision.models.resnet.Bottleneck`` blocks with
  torchvision attribute names (conv1 / bn1 / relu / maxpool / layer1..3 / avgpool / fc), so
  code written for torchvision ResNets (LRP for ResNet of Otsuki et al. 2024, DeepLIFT with
  the reused ReLU module, ...) works unchanged; each stage opens with a projection skip and
  continues with an identity skip.
- ``sb_vgg``: a VGG with BatchNorm and torchvision VGG names (features / avgpool / classifier).
- ``sb_nibvgg``: a narrow NIB VGG13-2 of Lee & Chang 2021 (no bias anywhere, mean-free BN); its
  ``avgpool`` is a global average pool (linear, bias-free) so the small head learns fast.

Factories return eval-mode models carrying ``model.sb_layers`` and load the checkpoint
shipped in ``saliencybench/models/checkpoints/`` through
:func:`saliencybench.models.checkpoint.load_checkpoint` (``saliencybench train NAME``
rebuilds it, see :func:`saliencybench.training.recipes.train_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from saliencybench.core.registry import register_model
from saliencybench.models.checkpoint import load_checkpoint
from saliencybench.models.nib import nib_vgg

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
#: Classes of the ``synthetic`` dataset the zoo is trained on (its eight shape families,
#: ``saliencybench.datasets.synthetic.CLASS_NAMES``; a test checks that the two agree). The
#: constant lives here because ``models`` never imports ``datasets``.
NUM_CLASSES = 8


# --- architectures ------------------------------------------------------------------------

class SmallBottleneckResNet(nn.Module):
    """A 64x64 ResNet of torchvision Bottleneck blocks (expansion 4), torchvision names.

    conv1 3x3/1 -> bn1 -> relu -> maxpool 2x2 (32x32) -> layer1 (planes p, 32x32) ->
    layer2 (2p, stride 2, 16x16) -> layer3 (4p, stride 2, 8x8) -> avgpool -> fc. Every stage
    has ``blocks`` Bottlenecks: the first with a conv1x1+BN projection skip, the others
    identity skips.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, planes: int = 8, stem: int = 16,
                 blocks: tuple[int, ...] = (2, 2, 2)) -> None:
        super().__init__()
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = self._stage(planes, blocks[0], stride=1)
        self.layer2 = self._stage(planes * 2, blocks[1], stride=2)
        self.layer3 = self._stage(planes * 4, blocks[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes * 4 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        down = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride=stride, downsample=down)]
        self.inplanes = out
        layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SmallVGG(nn.Module):
    """A 64x64 VGG-BN with torchvision names: ``features`` / ``avgpool`` / ``classifier``."""

    def __init__(self, cfg: list[int | str], num_classes: int = NUM_CLASSES, pool_hw: int = 1,
                 hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU()]
                c_in = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_hw, pool_hw))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * pool_hw * pool_hw, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def stage_end_relus(features: nn.Sequential) -> list[str]:
    """Names (``features.<i>``) of the last ReLU before each MaxPool of a VGG ``features``."""
    names, last = [], None
    for i, m in enumerate(features):
        if isinstance(m, nn.ReLU):
            last = f"features.{i}"
        elif isinstance(m, nn.MaxPool2d) and last is not None:
            names.append(last)
    return names


_SB_VGG_CFG: list[int | str] = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M"]


def _build_resnet(num_classes: int) -> nn.Module:
    return SmallBottleneckResNet(num_classes)


def _build_vgg(num_classes: int) -> nn.Module:
    return SmallVGG(_SB_VGG_CFG, num_classes)


def _build_nibvgg(num_classes: int) -> nn.Module:
    return nib_vgg("vgg13-2", num_classes, 64, width=0.25, hidden=128, dropout=0.0, pool_hw=1)


def _vgg_layers(builder: Callable[[int], nn.Module]) -> dict[str, str | None]:
    ends = stage_end_relus(builder(NUM_CLASSES).features)  # type: ignore[arg-type]
    return {"input": None, "middle": ends[len(ends) // 2], "final": ends[-1], "cam": ends[-1]}


RESNET_LAYERS = {"input": None, "middle": "layer2", "final": "layer3", "cam": "layer3"}
VGG_LAYERS = _vgg_layers(_build_vgg)          # middle features.13 (16x16), final features.20 (8x8)
NIBVGG_LAYERS = _vgg_layers(_build_nibvgg)    # middle features.19 (16x16), final features.26 (8x8)


# --- checkpoints and factories -------------------------------------------------------------

def checkpoint_path(name: str) -> Path:
    """Where the shipped checkpoint of zoo model ``name`` lives."""
    return CHECKPOINT_DIR / f"{name}.pt"


def _make(name: str, builder: Callable[[int], nn.Module], layers: dict[str, str | None], *,
          pretrained: bool, num_classes: int | None, device: str | torch.device,
          checkpoint: str | None) -> nn.Module:
    model = builder(NUM_CLASSES if num_classes is None else int(num_classes))
    if pretrained or checkpoint is not None:
        load_checkpoint(model, checkpoint_path(name) if checkpoint is None else checkpoint,
                        new_head=num_classes is not None and int(num_classes) != NUM_CLASSES,
                        remedy=f"run `saliencybench train {name}` to (re)create it, or pass pretrained=False")
    model.sb_layers = dict(layers)  # type: ignore[assignment]
    return model.to(device).eval()


def _zoo_model(name: str, builder: Callable[[int], nn.Module], layers: dict[str, str | None], doc: str,
               **meta: object) -> Callable[..., nn.Module]:
    """Register zoo model ``name`` (built by ``builder``, checkpoint ``<name>.pt``) and return its factory."""

    def factory(*, pretrained: bool = True, num_classes: int | None = None, device: str | torch.device = "cpu",
                checkpoint: str | None = None) -> nn.Module:
        return _make(name, builder, layers, pretrained=pretrained, num_classes=num_classes, device=device,
                     checkpoint=checkpoint)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return register_model(name, dataset="synthetic", input_size=(3, 64, 64), num_classes=NUM_CLASSES,
                          layers=layers, cam_layer=layers["cam"], checkpoint=f"{name}.pt", **meta)(factory)


# ``accuracy``: top-1 of the shipped checkpoint on the whole synthetic test split (2000
# images, seed 0), as returned by ``train_model`` (the zoo recipes of
# saliencybench.training.recipes, CPU, seed 0).
sb_resnet = _zoo_model(
    "sb_resnet", _build_resnet, RESNET_LAYERS,
    "Small Bottleneck ResNet (2 blocks x 3 stages, widths 32/64/128) for ``synthetic``.",
    accuracy=0.9895, paper="Otsuki et al. 2024: Bottleneck ResNet, identity and projection skips")
sb_vgg = _zoo_model(
    "sb_vgg", _build_vgg, VGG_LAYERS,
    "Small VGG-BN (6 convs, 4 max-pools, global average pool, 3 FC layers) for ``synthetic``.",
    accuracy=0.9985, paper="Simonyan & Zisserman 2014 (VGG with BatchNorm), torchvision names")
sb_nibvgg = _zoo_model(
    "sb_nibvgg", _build_nibvgg, NIBVGG_LAYERS,
    "NIB VGG13-2 of Lee & Chang 2021, Table 1, at width 1/4 (16..128 channels), GAP, FC-128 x2, "
    "for ``synthetic``.",
    accuracy=0.9975, paper="Lee & Chang 2021: NIB VGG, Table 1 (VGG13-2 at width 1/4, global average pooling)",
    nib=True)
