"""timm models as an optional extra: ``timm:<name>`` anywhere a model name is accepted.

``pip install 'saliency-bench[timm]'`` installs timm; then every timm architecture is a model:

- in a suite: ``models = ["timm:resnet18", "timm:efficientnet_b0"]``, with parameters in
  ``[models."timm:resnet18"]`` (``pretrained = true``, ``num_classes = 8``, ``checkpoint =
  "path.pt"``, or any keyword of ``timm.create_model`` such as ``drop_path_rate``);
- on the command line: ``saliencybench run --models timm:resnet18``;
- in Python: ``saliencybench.create_model("timm:resnet18")``.

Models are randomly initialised unless ``pretrained = true`` (timm downloads the weights from
the Hugging Face hub or uses its local cache). A pretrained tag picks other weights:
``timm:resnet50.a1_in1k`` (timm's spelling) or ``timm:resnet50:a1_in1k`` (the ``NAME:WEIGHTS``
spelling of the torchvision models); either implies ``pretrained``.

The prefix is registered whether or not timm is installed, so that ``timm:resnet18`` without
timm fails with the install command instead of "unknown model 'timm'".

Layers for layer attributions and CAMs (``model.sb_layers``) come from timm's feature metadata
``model.feature_info`` (one entry per stage output with its reduction): the last entry is
``final`` and ``cam`` (``layer4`` of a ResNet, ``blocks.6`` of an EfficientNet-B0), and the
middle entry of the list is ``middle`` (``layer2`` of a ResNet, reduction 8, the middle layer
of Rao et al. 2022). Transformers report token-shaped blocks there; the CNN layer methods expect
(B,C,h,w) maps and do not apply to them.

Input size and normalisation come from timm's pretrained configuration
(``timm.data.resolve_model_data_config``): the model carries them in ``model.sb_info`` and
``model.sb_normalization``; the runner re-normalises the samples to the model's mean / std
and, for the ImageNet-style datasets (``image_size`` / ``resize_size`` parameters), takes the
input size and the crop fraction from the model unless the suite sets them
(:func:`saliencybench.benchmark.runner.build_samples`).
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any

import torch
from torch import nn

from saliencybench.core.names import close_matches, did_you_mean
from saliencybench.core.registry import MODELS, Entry, MissingDependencyError, UnknownNameError
from saliencybench.core.types import Normalization
from saliencybench.models.checkpoint import load_checkpoint

PREFIX = "timm"
INSTALL_HINT = "pip install 'saliency-bench[timm]'"


def import_timm() -> Any:
    """Import timm or raise :class:`MissingDependencyError` with the install command."""
    try:
        return importlib.import_module("timm")
    except ImportError as e:
        raise MissingDependencyError(
            f"the timm:* models need the optional dependency timm ({e}); install it with `{INSTALL_HINT}`"
        ) from None


# -- names ------------------------------------------------------------------------------------
def split_name(name: str, weights: str | None = None) -> tuple[str, str | None]:
    """``"resnet50.a1_in1k"`` -> ``("resnet50", "a1_in1k")``; ``weights`` is another spelling
    of the tag (``timm:resnet50:a1_in1k``); giving both raises."""
    arch, _, tag = str(name).strip().partition(".")
    tag = tag.strip() or None
    if weights is not None and str(weights).strip().lower() not in ("", "none", "random"):
        w = str(weights).strip().lstrip(".")
        if tag is not None and w != tag:
            raise ValueError(f"timm:{name}: two pretrained tags ({tag!r} in the name and weights={w!r}); give one")
        tag = w
    return arch.strip(), tag


def _check_name(timm: Any, name: str) -> None:
    """Raise :class:`UnknownNameError` (with a suggestion) unless ``name`` is a timm model."""
    arch, tag = split_name(name)
    if not arch or not timm.is_model(arch):
        choices = timm.list_models()
        close = close_matches(arch, choices)  # matched without the prefix, shown with it
        hint = f"; did you mean {', '.join(repr(f'{PREFIX}:{c}') for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown timm model '{arch}'{hint} (timm {timm.__version__} has {len(choices)} models; "
            f"see `saliencybench list models 'timm:{arch[:3]}*'`)")
    if tag is not None:
        _check_tag(timm, arch, tag)


def _check_tag(timm: Any, arch: str, tag: str) -> None:
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
    if tag not in tags:
        hint = did_you_mean(tag, tags, cutoff=0.5)
        avail = f"choose one of {', '.join(tags)}" if tags else "it has no pretrained weights in timm"
        raise UnknownNameError(f"unknown pretrained tag '{tag}' for timm model '{arch}'{hint} ({avail})")


def list_timm(pattern: str = "*") -> list[str]:
    """timm model names matching a wildcard (``"resnet*"``); with a ``.`` the pretrained tags."""
    timm = import_timm()
    if "." in pattern:
        return [n for n in timm.list_pretrained() if fnmatch.fnmatchcase(n, pattern)]
    return [n for n in timm.list_models() if fnmatch.fnmatchcase(n, pattern)]


def describe() -> str:
    """The line ``saliencybench list models`` prints for the prefix."""
    try:
        timm = import_timm()
    except MissingDependencyError:
        return f"any timm model, e.g. {PREFIX}:resnet18 (timm is not installed: {INSTALL_HINT})"
    return (f"any timm model, e.g. {PREFIX}:resnet18 ({len(timm.list_models())} available in timm "
            f"{timm.__version__}; `saliencybench list models 'timm:resnet*'` lists them)")


# -- layers and data config -------------------------------------------------------------------
def feature_layers(model: nn.Module) -> dict[str, str | None]:
    """``sb_layers`` from timm's ``feature_info``: the last stage as final / cam, the middle
    entry as middle (``layer2`` / ``layer4`` for a ResNet)."""
    info = getattr(model, "feature_info", None)
    entries = [dict(f) for f in info] if info else []
    entries = [f for f in entries if f.get("module")]
    modules = dict(model.named_modules())
    entries = [f for f in entries if f["module"] in modules]
    if not entries:
        raise ValueError(f"timm model {type(model).__name__} has no usable feature_info; "
                         f"name the layer explicitly (method parameter layer = \"<module name>\")")
    final = entries[-1]["module"]
    middle = entries[len(entries) // 2]["module"]
    return {"input": None, "middle": middle, "final": final, "cam": final}


def data_config(model: nn.Module) -> dict[str, Any]:
    """Input size, interpolation, mean, std and crop fraction of ``model`` (timm's pretrained cfg)."""
    timm = import_timm()
    resolve = getattr(timm.data, "resolve_model_data_config", None)
    if resolve is not None:
        cfg = resolve(model)
    else:  # pragma: no cover - timm < 0.9
        cfg = timm.data.resolve_data_config({}, model=model)
    return {
        "input_size": [int(v) for v in cfg["input_size"]],
        "interpolation": str(cfg.get("interpolation", "bilinear")),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
        "crop_mode": str(cfg.get("crop_mode", "center")),
    }


# -- building ---------------------------------------------------------------------------------
def build_timm(name: str, *, pretrained: bool = False, weights: str | None = None,
               num_classes: int | None = None, checkpoint: str | None = None,
               device: str | torch.device = "cpu", **kw: Any) -> nn.Module:
    """A timm model in eval mode on ``device``, with ``sb_layers``, ``sb_info`` and ``sb_normalization``.

    Args:
        name: timm architecture, optionally with a pretrained tag (``"resnet50.a1_in1k"``).
        pretrained: load timm's pretrained weights (download or local cache); default random init.
        weights: a pretrained tag (``"a1_in1k"``), from ``timm:resnet50:a1_in1k``; implies pretrained.
        num_classes: size of the classifier (a new random head on pretrained weights when it differs).
        checkpoint: a user state dict (random init first, then every weight from the file).
        kw: passed to ``timm.create_model`` (``drop_path_rate``, ``global_pool``, ...).
    """
    timm = import_timm()
    arch, tag = split_name(name, weights)
    _check_name(timm, arch if tag is None else f"{arch}.{tag}")
    full = arch if tag is None else f"{arch}.{tag}"
    pretrained = bool(pretrained) or tag is not None
    if checkpoint is not None and pretrained:
        raise ValueError(f"timm:{full}: give either pretrained weights or checkpoint=, not both")
    kwargs = dict(kw)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    try:
        model = timm.create_model(full, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise ValueError(f"timm:{full}: timm.create_model rejected the parameters {sorted(kwargs)}: {e}") from None
    except Exception as e:
        if not pretrained:
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise RuntimeError(
            f"could not load the pretrained weights of timm:{full} ({type(e).__name__}: {first}); timm "
            f"downloads them from the Hugging Face hub or reads its cache (HF_HOME). Without network use "
            f"pretrained = false (random init) or checkpoint = \"PATH\"; HF_HUB_OFFLINE=1 fails fast"
        ) from e
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    dcfg = data_config(model)
    model.sb_layers = feature_layers(model)
    model.sb_normalization = Normalization(tuple(dcfg["mean"]), tuple(dcfg["std"]))
    model.sb_info = {
        "arch": f"{PREFIX}:{arch}", "timm_name": full, "timm_version": timm.__version__,
        "weights": tag if tag is not None else (
            str(getattr(model, "pretrained_cfg", {}).get("tag") or "default") if pretrained else None),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "num_classes": int(getattr(model, "num_classes", num_classes or 0) or 0),
        "input_size": dcfg["input_size"][-1],
        "data_config": dcfg,
    }
    return model.to(device).eval()


def _resolve(name: str) -> Entry[Any]:
    """The registry entry of ``timm:<name>`` (raises with a suggestion for unknown names)."""
    timm = import_timm()
    _check_name(timm, name)
    arch, tag = split_name(name)
    try:
        cfg = timm.models.get_pretrained_cfg(name if tag else arch)
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    except Exception:  # noqa: BLE001 - metadata only
        cfg = {}

    def factory(**kw: Any) -> nn.Module:
        return build_timm(name, **kw)

    factory.__name__ = factory.__qualname__ = f"timm_{arch}"
    factory.__doc__ = f"timm {name} (see :func:`saliencybench.models.timm_zoo.build_timm`)."
    meta: dict[str, Any] = {
        "family": "timm", "dataset": "imagenet", "timm_name": name,
        "description": f"timm {name}, random init unless pretrained = true",
    }
    if cfg.get("input_size"):
        meta["input_size"] = list(cfg["input_size"])
    return Entry(name=f"{PREFIX}:{name}", obj=factory, kind="model", meta=meta)


MODELS.add_prefix(PREFIX, _resolve, describe=describe, names=list_timm)
