"""Checkpoints: the one reader and the one writer of model weights, with clear errors.

Every model of the package loads its weights here: the zoo's shipped files
(``saliencybench/models/checkpoints/<name>.pt``, bare state dicts), the files the training
recipes write, and user files. Accepted files (all read with ``torch.load(...,
weights_only=True)``, so no pickled code runs): a raw ``state_dict``; ``{"state_dict": ...}``
(what :func:`save_checkpoint` writes); ``{"model": ...}``; ``{"model_state_dict": ...}`` (what
common training scripts write). Keys prefixed ``module.`` (DataParallel /
DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``) are accepted too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from saliencybench.core.errors import CheckpointError
from saliencybench.core.io import atomic_torch_save

STATE_KEYS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")
#: What a failed load suggests unless the caller knows better (the zoo names its train command).
DEFAULT_REMEDY = ("train one with `saliencybench train ...` or pass the path of a file written by "
                  "torch.save(model.state_dict(), path)")


def read_state_dict(path: str | Path, *, remedy: str = DEFAULT_REMEDY) -> dict[str, Tensor]:
    """The state dict stored in ``path`` (any of the accepted containers), on CPU."""
    p = Path(os.path.expandvars(str(path))).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p} does not exist; {remedy}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise CheckpointError(
            f"could not read checkpoint, the file is unreadable: {p} ({type(err).__name__}: {first}; "
            "is it truncated or not a torch.save file? checkpoints are loaded with weights_only=True, "
            f"so they must hold tensors and plain containers only); {remedy}"
        ) from err
    return extract_state_dict(obj, source=str(p), remedy=remedy)


def extract_state_dict(obj: Any, source: str = "checkpoint", *, remedy: str = "") -> dict[str, Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` containers and strip wrapper prefixes."""
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{source} holds no state dict: expected a dict of tensors, or a dict with one under "
            f"{' / '.join(repr(k) for k in STATE_KEYS)}; got {type(obj).__name__}" + (f"; {remedy}" if remedy else "")
        )
    out: dict[str, Tensor] = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _head_keys(model: nn.Module, state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> set[str]:
    """Keys of the last ``nn.Linear`` (the classifier head) whose shape differs in ``state``."""
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1:]
    if not head:
        return set()
    return {k for k, v in state.items()
            if k.startswith(head[0] + ".") and k in own and own[k].shape != v.shape}


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True, new_head: bool = False,
                    remedy: str = DEFAULT_REMEDY) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (in place) and return it.

    Raises :class:`CheckpointError` on a missing or corrupt file, and, with ``strict``, when
    keys or shapes do not match, naming a few missing / unexpected / mismatched keys. With
    ``new_head`` a classifier head (the last ``nn.Linear``) whose class count differs from the
    file's is left as initialised; every other weight still loads. ``remedy`` ends every
    message (how to get a good file).
    """
    state = read_state_dict(path, remedy=remedy)
    own = model.state_dict()
    skipped = _head_keys(model, state, own) if new_head else set()
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and k not in skipped and state[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch: {_few(shapes, 3)}")
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__}: " + "; ".join(parts)
            + f" (wrong architecture or num_classes?); {remedy}"
        )
    state = {k: v for k, v in state.items() if k not in skipped}
    model.load_state_dict(state, strict=strict and not skipped)
    return model


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> Path:
    """Write ``{"state_dict": ..., **extra}`` atomically (temp file + rename); return the path.

    The one format the package writes. ``extra`` must hold plain values (numbers, strings,
    lists, dicts) so the file loads with ``weights_only=True``.
    """
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(p, {"state_dict": state, **extra})
    return p
