"""Activations and target scores: the layer plumbing shared by the gradient, CAM, occlusion and
RISE methods.

Layer attribution (Rao et al. 2022, §3 "GridPG at input / middle / final layers"): a method
asked for ``layer=<name>`` returns its attribution at that layer's activation, (B,1,h,w) or
(B,C,h,w); post-processing sums channels and upsamples bilinearly to the input size.

Helpers here never leave hooks behind: every hook is removed in ``finally``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from saliencybench.core.modules import get_layer, resolve_layer


def resolve_attribution_layer(model: nn.Module, layer: str | None) -> str | None:
    """Module name for a gradient-method ``layer`` argument; None means the input.

    Aliases input / middle / final / cam are resolved with ``resolve_layer``; the alias
    ``input`` (and ``layer=None``) means the model input.
    """
    if layer is None or layer == "input":
        name = getattr(model, "sb_layers", {}).get("input") if layer == "input" else None
        return name
    return resolve_layer(model, layer)


def resolve_cam_layer(model: nn.Module, layer: str | None) -> str | None:
    """Module name for a CAM method: ``None`` means the model's CAM layer (last conv stage).

    ``layer="input"`` returns None, the input itself: the CAM formula is applied to the
    image's channels as if they were the layer activation, as Rao et al. 2022 (Fig. 9, CAMs
    at the input layer) do in their official code, which hands every method the activation
    at the requested layer, the image at the input.
    """
    if layer == "input":
        return resolve_attribution_layer(model, "input")
    name = resolve_layer(model, layer)
    if name is None:
        raise ValueError(f"layer {layer!r} resolves to the input; CAM methods need a feature layer")
    return name


@contextlib.contextmanager
def replace_layer_output(model: nn.Module, name: str, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the block, the output of layer ``name`` is replaced by ``fn(output)``.

    ``fn`` may change the batch size (e.g. expand B activations into B*n perturbed copies):
    every layer after ``name`` then sees the larger batch. That is valid when nothing after
    the layer reads a tensor computed before it (true for stage outputs of ResNets / VGGs).
    """
    layer = get_layer(model, name)
    handle = layer.register_forward_hook(lambda _m, _i, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


def forward_with_activation(model: nn.Module, x: Tensor, name: str | None) -> tuple[Tensor, Tensor]:
    """Logits and the activation at ``name`` (the input itself when ``name`` is None).

    The activation is part of the autograd graph so that ``torch.autograd.grad(score, act)``
    gives the gradient with respect to it. With a layer called several times the last call
    is the one returned.
    """
    if name is None:
        act = x.detach().requires_grad_(True)
        return model(act), act
    store: dict[str, Tensor] = {}

    def keep(out: Tensor) -> Tensor:
        store["act"] = out
        return out

    inp = x.detach().requires_grad_(True)  # so that every activation is in the graph
    with replace_layer_output(model, name, keep):
        logits = model(inp)
    if "act" not in store:
        raise RuntimeError(f"layer '{name}' was not called during the forward pass")
    return logits, store["act"]


def target_scores(logits: Tensor, target: Tensor) -> Tensor:
    """(B,) logits of the target classes."""
    return logits.gather(1, target.view(-1, 1).to(logits.device)).squeeze(1)


def gradient_at(model: nn.Module, x: Tensor, target: Tensor, name: str | None) -> tuple[Tensor, Tensor]:
    """(gradient of the target logit w.r.t. the activation at ``name``, that activation), detached."""
    logits, act = forward_with_activation(model, x, name)
    (grad,) = torch.autograd.grad(target_scores(logits, target).sum(), act)
    return grad.detach(), act.detach()
