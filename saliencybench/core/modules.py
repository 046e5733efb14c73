"""Helpers to address a model's layers by name and capture their activations."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import Tensor, nn

from saliencybench.core.names import did_you_mean


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), with a clear error."""
    modules = dict(model.named_modules())
    if name not in modules:
        hint = did_you_mean(name, [n for n in modules if n], quote=False)
        if name in ("cam", "middle", "final") and not hint:  # an alias the model does not map
            hint = (f" (an alias: set model.sb_layers = {{'{name}': '<module name>'}} or give the "
                    "method layer='<module name>')")
        raise KeyError(f"model has no layer '{name}'{hint}")
    return modules[name]


def resolve_layer(model: nn.Module, layer: str | None, meta: dict | None = None) -> str:
    """Map ``input`` / ``middle`` / ``final`` / ``cam`` aliases to a module name via model metadata.

    Models built by the registry carry ``model.sb_layers`` = {"input": None or name,
    "middle": name, "final": name, "cam": name}; plain torchvision models fall back to known
    names (layer4 / features).
    """
    layers = dict(getattr(model, "sb_layers", {}) or {})
    layers.update((meta or {}).get("layers", {}) or {})
    if layer is None:
        layer = "cam"
    if layer in layers:
        return layers[layer]
    if layer in ("cam", "final"):
        for cand in ("layer4", "features", "stages.3"):
            with contextlib.suppress(KeyError):
                get_layer(model, cand)
                return cand
    return layer


@contextlib.contextmanager
def capture_activation(model: nn.Module, name: str, *, retain_grad: bool = True) -> Iterator[dict]:
    """Record the output of layer ``name`` during the forward passes inside the block.

    Yields a dict whose ``"out"`` holds the last activation (with ``retain_grad`` so that
    ``.grad`` is filled by a backward pass). The hook is removed in ``finally``.
    """
    store: dict[str, Tensor] = {}
    layer = get_layer(model, name)

    def hook(_m, _inp, out):
        if retain_grad and out.requires_grad:
            out.retain_grad()
        store["out"] = out

    h = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        h.remove()
