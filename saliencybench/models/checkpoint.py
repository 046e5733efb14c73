"""User checkpoints: load a saved state dict into a registry model, with clear errors.

Accepted files (all read with ``torch.load(..., weights_only=True)``, so no pickled code runs):
a raw ``state_dict``; ``{"state_dict": ...}``; ``{"model": ...}``; ``{"model_state_dict": ...}``
(what common training scripts write). Keys prefixed ``module.`` (DataParallel /
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


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict stored in ``path`` (any of the accepted containers), on CPU."""
    p = Path(os.path.expandvars(str(path))).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; train one with `saliencybench train "
                              f"...` or pass the path of a file written by torch.save(model.state_dict(), path)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(
            f"could not read checkpoint {p}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(is it truncated or not a torch.save file? checkpoints are loaded with "
            "weights_only=True, so they must hold tensors and plain containers only)"
        ) from err
    return extract_state_dict(obj, source=str(p))


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
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
            f"{' / '.join(repr(k) for k in STATE_KEYS)}; got {type(obj).__name__}"
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


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (in place) and return it.

    Raises :class:`CheckpointError` on a missing or corrupt file, and, with ``strict``, when
    keys or shapes do not match, naming a few missing / unexpected / mismatched keys.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
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
            + " (wrong architecture or num_classes?)"
        )
    model.load_state_dict(state, strict=strict)
    return model


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> Path:
    """Write ``{"state_dict": ..., **extra}`` atomically (temp file + rename); return the path.

    ``extra`` must hold plain values (numbers, strings, lists, dicts) so the file loads with
    ``weights_only=True``.
    """
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(p, {"state_dict": state, **extra})
    return p
