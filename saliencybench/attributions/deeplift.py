"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017, §3.5.1), baseline zero by default.

The input and the baseline go through the model as one batch ``[x; x']`` of 2B images. Every
``relu`` and ``max_pool2d`` *call* is replaced (through
:class:`~saliencybench.attributions.gradient.NonlinearityOverride`) by an autograd function
whose forward is unchanged and whose backward uses the DeepLIFT multiplier of that call,
computed from the two halves of its own input. Nothing is keyed by module, so torchvision
ResNets, whose Bottleneck blocks call one ReLU module three times, are handled, and no hook
is registered on the model.

- ReLU: ``m = (relu(z) - relu(z')) / (z - z')``, the plain gradient where ``|z - z'| < eps``.
- MaxPool: the output difference ``max(x) - max(x')`` is split, as in Captum, into
  ``max(o, o') - o'`` assigned to the input's arg-max and ``o - max(o, o')`` assigned to the
  baseline's arg-max, then divided by the input difference (scatter-add, so overlapping
  windows are exact).

Attribution ``(x - x') * m(x)`` sums to ``f(x) - f(x')`` (summation-to-delta, Eq. 1) for
networks of linear maps (conv, linear, eval-mode BN, average pooling, additions), ReLUs and
max pools.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.attributions.activations import target_scores
from saliencybench.attributions.gradient import NonlinearityOverride
from saliencybench.attributions.path import _baseline_like
from saliencybench.core.registry import register_method

_EPS = 1e-10


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return num / torch.where(den.abs() < _EPS, torch.ones_like(den), den)


class _RescaleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        zx, z0 = z.chunk(2)
        dz = zx - z0
        mult = _safe_div(zx.clamp(min=0) - z0.clamp(min=0), dz)
        small = dz.abs() < _EPS
        mult = torch.cat([torch.where(small, (zx > 0).to(g.dtype), mult),
                          torch.where(small, (z0 > 0).to(g.dtype), mult)])
        return g * mult


def _scatter_to_input(vals: Tensor, idx: Tensor, like: Tensor) -> Tensor:
    out = torch.zeros(like.shape[0], like.shape[1], like.shape[2] * like.shape[3],
                      dtype=vals.dtype, device=vals.device)
    out.scatter_add_(2, idx.flatten(2), vals.flatten(2))
    return out.view_as(like)


class _RescaleMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, kernel_size, stride, padding, dilation, ceil_mode) -> Tensor:  # type: ignore[override]
        out, idx = F.max_pool2d(z, kernel_size, stride, padding, dilation, ceil_mode,
                                return_indices=True)
        ctx.save_for_backward(z, out, idx)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        z, out, idx = ctx.saved_tensors
        zx, z0 = z.chunk(2)
        ox, o0 = out.chunk(2)
        ix, i0 = idx.chunk(2)
        gx, g0 = g.chunk(2)
        top = torch.maximum(ox, o0)
        spread = (_scatter_to_input(gx * (top - o0), ix, zx)
                  + _scatter_to_input(g0 * (ox - top), i0, z0))
        dz = zx - z0
        small = dz.abs() < _EPS
        plain = _scatter_to_input(g, idx, z)
        rescaled = _safe_div(spread, dz)
        px, p0 = plain.chunk(2)
        grad = torch.cat([torch.where(small, px, rescaled), torch.where(small, p0, rescaled)])
        return grad, None, None, None, None, None


def _rescale_maxpool(z: Tensor, kernel_size, stride, padding, dilation, ceil_mode) -> Tensor:
    if z.ndim != 4:
        return F.max_pool2d(z, kernel_size, stride, padding, dilation, ceil_mode)
    return _RescaleMaxPool.apply(z, kernel_size, stride, padding, dilation, ceil_mode)


def deeplift(model: nn.Module, x: Tensor, target: Tensor, *,
             baseline: float | Tensor | None = None) -> Tensor:
    """DeepLIFT Rescale attribution ``(x - x') * multiplier`` (Shrikumar et al. 2017), (B,C,H,W).

    Like Captum, the objective is the target logit of both halves, so the baseline half's
    multipliers are available to the max-pool rule.

    Defaults: ``baseline=None``, the all-zero reference in normalised input space (Shrikumar
    et al. 2017 §3.1 and Captum's default; the dataset-mean colour).
    """
    base = _baseline_like(x.detach(), baseline)
    b = x.shape[0]
    inp = torch.cat([x.detach(), base]).requires_grad_(True)
    with NonlinearityOverride(_RescaleReLU.apply, _rescale_maxpool):
        logits = model(inp)
    score = target_scores(logits, torch.cat([target, target])).sum()
    (grad,) = torch.autograd.grad(score, inp)
    return (x.detach() - base) * grad[:b]


register_method("deeplift", family="gradient",
                paper="Shrikumar et al. 2017 (Rescale); baseline in Otsuki et al. 2024 Table B, "
                      "Jeon et al. 2022 Table 3",
                postprocess=("sum",), conservation="completeness")(deeplift)
