"""What a model's outputs mean: class probabilities, per head for multi-head grid wrappers."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def head_softmax(logits: Tensor, heads: int = 1) -> Tensor:
    """Softmax of (B, heads*K) logits within each head's own K logits (same shape out).

    ``heads=1`` is the ordinary softmax over dim 1. Rao et al. 2022 (§3.1, supp. §A): the
    DiFull / DiPart heads are separate classifiers, one per cell.
    """
    heads = int(heads or 1)
    if heads <= 1:
        return torch.softmax(logits, dim=1)
    b, t = logits.shape
    if t % heads:
        raise ValueError(f"{t} outputs do not split into {heads} heads")
    return torch.softmax(logits.reshape(b, heads, t // heads), dim=2).reshape(b, t)


def class_probabilities(model: nn.Module, logits: Tensor) -> Tensor:
    """Class probabilities of ``model``'s (B, T) logits: per head for grid wrappers
    (``model.sb_heads`` heads of T / sb_heads logits each), an ordinary softmax otherwise."""
    return head_softmax(logits, int(getattr(model, "sb_heads", 1) or 1))
