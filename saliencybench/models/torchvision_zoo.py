"""torchvision classifiers (ResNet18/50, VGG11/16 (+BN), Inception-v3) and NIB-VGG for CIFAR.

Every factory has the signature ``fn(*, weights=None, num_classes=None, checkpoint=None,
device="cpu", pretrained=False) -> nn.Module`` and returns the model in eval mode with
``model.sb_layers`` set. ``weights`` names a torchvision weights enum member
(``"IMAGENET1K_V1"``, ``"DEFAULT"``, or fully qualified ``"ResNet50_Weights.IMAGENET1K_V1"``);
a suite may write the model as ``"resnet50:IMAGENET1K_V1"`` (:func:`parse_model_spec`,
:func:`build_model_from_spec`). ``checkpoint`` loads a user's state dict
(:func:`saliencybench.models.checkpoint.load_checkpoint`).

Layers used for layer attributions (``input`` / ``middle`` / ``final``, and ``cam``):

- VGG: the ReLU after convolution k = round(5n/8) of n convolutions as middle and the ReLU
  after the last convolution as final. For VGG11 that is the ReLU after conv5 and after
  conv8 (``features.12`` / ``features.19``), the layers of Rao et al. 2022;
  for VGG16 conv8 / conv13.
- ResNet18 / ResNet50: ``layer2`` (middle) and ``layer4`` (final), as in Rao et al. 2022.
- Inception-v3: ``Mixed_6e`` (middle: last block at 17x17, the middle of the three
  resolutions 35 / 17 / 8) and ``Mixed_7c`` (final: last block before pooling, the usual
  Grad-CAM layer).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

from saliencybench.core.errors import WeightsError
from saliencybench.core.registry import MODELS, register_model
from saliencybench.models.checkpoint import load_checkpoint

ARCHS: dict[str, dict[str, Any]] = {
    "resnet18": {"family": "resnet", "input_size": 224},
    "resnet50": {"family": "resnet", "input_size": 224},
    "vgg11": {"family": "vgg", "input_size": 224},
    "vgg11_bn": {"family": "vgg", "input_size": 224},
    "vgg16": {"family": "vgg", "input_size": 224},
    "vgg16_bn": {"family": "vgg", "input_size": 224},
    "inception_v3": {"family": "inception", "input_size": 299},
}

# Lee & Chang 2021, Table 1 sizes -> registry name; the configuration name passed to nib_vgg().
NIB_SIZES: dict[str, str] = {
    "nib_vgg13_6": "vgg13-6",
    "nib_vgg13_4": "vgg13-4",
    "nib_vgg13_2": "vgg13-2",
    "nib_vgg13": "vgg13",
    "nib_vgg16": "vgg16",
}


# -- specs and weights ------------------------------------------------------------------------
def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"resnet50:IMAGENET1K_V1"`` -> ``("resnet50", "IMAGENET1K_V1")``; ``"resnet50"`` -> ``("resnet50", None)``.

    A registered prefix belongs to the name: ``"timm:resnet18"`` -> ``("timm:resnet18", None)``.
    """
    full = str(spec).strip()
    prefix = MODELS.prefix_of(full)
    head = f"{prefix}:" if prefix is not None else ""
    name, sep, weights = full[len(head):].partition(":")
    name, weights = name.strip(), weights.strip()
    if not name or (sep and not weights):
        raise ValueError(f"malformed model spec {full!r}; expected NAME or NAME:WEIGHTS")
    name = head + name
    return name, (weights or None)


def resolve_weights(arch: str, weights: Any) -> Any:
    """The torchvision ``WeightsEnum`` member for ``weights`` (or None); nothing is downloaded.

    Accepts a member, ``"DEFAULT"``, a member name (``"IMAGENET1K_V1"``) or a qualified name
    (``"ResNet50_Weights.IMAGENET1K_V1"``); ``None`` / ``""`` / ``"none"`` mean random init.
    """
    from torchvision.models import WeightsEnum, get_model_weights, get_weight

    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("", "none", "random")):
        return None
    enum_cls = get_model_weights(arch)
    if isinstance(weights, WeightsEnum):
        member = weights
    else:
        text = str(weights).strip()
        try:
            member = get_weight(text) if "." in text else enum_cls[text]
        except (KeyError, ValueError, AttributeError):
            choices = ", ".join(list(enum_cls.__members__))
            raise WeightsError(f"unknown weights {text!r} for {arch}; choose one of {choices}") from None
    if not isinstance(member, enum_cls):
        raise WeightsError(f"weights {member} belong to another architecture than {arch} "
                           f"(expected {enum_cls.__name__})")
    return member


# -- layers -------------------------------------------------------------------------------------
def vgg_layers(model: nn.Module) -> dict[str, str | None]:
    """sb_layers of a VGG-like model: ReLU after conv round(5n/8) (middle) and after the last conv."""
    order = [(n, m) for n, m in model.named_modules() if n]
    conv_pos = [i for i, (_, m) in enumerate(order) if isinstance(m, nn.Conv2d)]
    if not conv_pos:
        raise ValueError("model has no Conv2d layers")

    def relu_after(k: int) -> str:
        start = conv_pos[k - 1]
        for name, mod in order[start + 1:]:
            if isinstance(mod, nn.ReLU):
                return name
        return order[start][0]

    n = len(conv_pos)
    mid = max(1, int(5 * n / 8 + 0.5))
    final = relu_after(n)
    return {"input": None, "middle": relu_after(mid), "final": final, "cam": final}


def default_layers(arch: str, model: nn.Module) -> dict[str, str | None]:
    family = ARCHS[arch]["family"]
    if family == "resnet":
        return {"input": None, "middle": "layer2", "final": "layer4", "cam": "layer4"}
    if family == "inception":
        return {"input": None, "middle": "Mixed_6e", "final": "Mixed_7c", "cam": "Mixed_7c"}
    return vgg_layers(model)


# -- building -----------------------------------------------------------------------------------
def _replace_head(model: nn.Module, num_classes: int) -> None:
    """A fresh classification layer with ``num_classes`` outputs (fine-tuning a pretrained net)."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        aux = getattr(model, "AuxLogits", None)
        if aux is not None and isinstance(getattr(aux, "fc", None), nn.Linear):
            aux.fc = nn.Linear(aux.fc.in_features, num_classes)
    elif hasattr(model, "classifier") and isinstance(model.classifier[-1], nn.Linear):
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    else:  # pragma: no cover - every architecture above has one of the two heads
        raise ValueError(f"do not know how to replace the head of {type(model).__name__}")


def build_torchvision(arch: str, *, weights: Any = None, num_classes: int | None = None,
                      checkpoint: str | None = None, device: str | torch.device = "cpu",
                      pretrained: bool = False, **kw: Any) -> nn.Module:
    """A torchvision classifier in eval mode on ``device``, with ``sb_layers`` set.

    ``pretrained=True`` means ``weights="DEFAULT"``. With ``weights`` and a ``num_classes``
    other than the weights' (e.g. 200 for CUB) the pretrained backbone gets a new random head.
    With ``checkpoint`` the architecture is built without downloading anything and the
    checkpoint supplies every weight.
    """
    from torchvision.models import get_model

    if arch not in ARCHS:
        raise ValueError(f"unknown torchvision architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if pretrained and weights is None:
        weights = "DEFAULT"
    member = resolve_weights(arch, weights)
    family = ARCHS[arch]["family"]
    n_pre = len(member.meta["categories"]) if member is not None else None
    kwargs = dict(kw)
    if family == "inception":
        kwargs.setdefault("transform_input", member is not None)
        if member is None or checkpoint is not None:
            kwargs.setdefault("init_weights", checkpoint is None)
    if checkpoint is not None or member is None:
        model = get_model(arch, weights=None, num_classes=num_classes or n_pre or 1000, **kwargs)
    else:
        model = get_model(arch, weights=member, **kwargs)
        if num_classes is not None and num_classes != n_pre:
            _replace_head(model, num_classes)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    model.sb_layers = default_layers(arch, model)
    model.sb_info = {"arch": arch, "weights": None if member is None else str(member),
                     "checkpoint": None if checkpoint is None else str(checkpoint),
                     "num_classes": num_classes or n_pre or 1000,
                     "input_size": ARCHS[arch]["input_size"]}
    return model.to(device).eval()


def _register_torchvision(arch: str) -> None:
    def factory(*, weights: Any = None, num_classes: int | None = None, checkpoint: str | None = None,
                device: str | torch.device = "cpu", pretrained: bool = False, **kw: Any) -> nn.Module:
        return build_torchvision(arch, weights=weights, num_classes=num_classes, checkpoint=checkpoint,
                                 device=device, pretrained=pretrained, **kw)

    factory.__name__ = arch
    factory.__qualname__ = arch
    factory.__doc__ = f"torchvision {arch} (see :func:`build_torchvision`)."
    register_model(arch, family="torchvision", dataset="imagenet", input_size=ARCHS[arch]["input_size"],
                   weights_enum=True)(factory)


for _arch in ARCHS:
    _register_torchvision(_arch)


# -- NIB-VGG (Lee & Chang 2021) --------------------------------------------------------------------
def build_nib_vgg(name: str, *, num_classes: int | None = None, in_size: int = 32,
                  checkpoint: str | None = None, device: str | torch.device = "cpu",
                  weights: Any = None, pretrained: bool = False, **kw: Any) -> nn.Module:
    """NIB-VGG of Lee & Chang 2021, Table 1 (no biases, BN without mean) for CIFAR (32 x 32 inputs).

    Builds ``saliencybench.models.nib.nib_vgg(cfg_name, num_classes, in_size)`` (imported
    here so that this module imports even while that one is missing). There are no published
    weights: train with ``saliencybench.training.recipes.train_nib_vgg_cifar`` and pass the
    ``checkpoint``.
    """
    if weights not in (None, "", "none") or pretrained:
        raise ValueError(f"{name} has no published weights; train it (saliencybench train "
                         f"nib_vgg_cifar10) and pass checkpoint=PATH")
    try:
        from saliencybench.models.nib import nib_vgg
    except ImportError as err:
        raise ImportError(f"{name} needs saliencybench.models.nib.nib_vgg, which is not available: {err}") from err
    model = _call_nib_vgg(nib_vgg, NIB_SIZES[name], num_classes or 10, in_size, **kw)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    if not getattr(model, "sb_layers", None):
        model.sb_layers = vgg_layers(model)
    model.sb_info = {"arch": name, "weights": None, "checkpoint": None if checkpoint is None else str(checkpoint),
                     "num_classes": num_classes or 10, "input_size": in_size}
    return model.to(device).eval()


def _call_nib_vgg(nib_vgg: Callable[..., nn.Module], cfg: str, num_classes: int, in_size: int,
                  **kw: Any) -> nn.Module:
    """Call ``nib_vgg(cfg_name, num_classes, in_size)``, trying the usual spellings of the
    configuration name ("vgg13-6", "VGG13-6", "vgg13_6", "nib_vgg13_6")."""
    spellings = [cfg, cfg.upper(), cfg.replace("-", "_"), "nib_" + cfg.replace("-", "_")]
    first: Exception | None = None
    for spelling in dict.fromkeys(spellings):
        try:
            return nib_vgg(spelling, num_classes, in_size, **kw)
        except (KeyError, ValueError) as err:
            first = first or err
    assert first is not None
    raise first


def _register_nib(name: str) -> None:
    factory: Callable[..., nn.Module] = functools.partial(build_nib_vgg, name)
    functools.update_wrapper(factory, build_nib_vgg)
    register_model(name, family="nib_vgg", dataset="cifar10", input_size=32,
                   paper="Lee & Chang 2021, Table 1")(factory)


for _name in NIB_SIZES:
    _register_nib(_name)


def build_model_from_spec(spec: str, **kwargs: Any) -> nn.Module:
    """Build a registry model from ``"name"`` or ``"name:WEIGHTS"`` (weights override kwargs)."""
    name, weights = parse_model_spec(spec)
    if weights is not None:
        kwargs["weights"] = weights
    return MODELS.get(name).obj(**kwargs)
