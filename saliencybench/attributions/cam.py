"""Class activation maps on a selectable layer (default: the model's ``cam`` layer, the last
conv stage). Each returns (B,1,h,w) at the layer; post-processing upsamples bilinearly.
``layer="input"`` applies the CAM formula to the input's channels (Rao et al. 2022, Fig. 9).

- Grad-CAM (Selvaraju et al. 2017): ``relu(Σ_k mean_ij(∂y/∂A_k) A_k)``.
- Grad-CAM++ (Chattopadhyay et al. 2018, Eq. 19 with the exponential replaced by the logit,
  as in pytorch-grad-cam): ``α = g² / (2g² + Σ_ij A · g³)``, ``w_k = Σ_ij α relu(g)``.
- Score-CAM (Wang et al. 2020, §3-4, and the authors' code): each channel, upsampled
  (align_corners=False) and min-max normalised, masks the input; the target class's softmax
  probability of the masked input is the channel's weight; constant channels get weight 0.
  All B*K masked inputs are evaluated in batches.
- ``scorecam_pgc``: pytorch-grad-cam's variant (align_corners=True, the masked inputs' target
  logits softmaxed *across channels*), kept for the cross-check against that library.
- Layer-CAM (Jiang et al. 2021): ``relu(Σ_k relu(g_k) A_k)``.
- Ablation-CAM (Desai & Ramaswamy 2020): ``w_k = (y - y_k) / y`` where ``y_k`` is the target
  logit with channel k of the layer set to zero; the layer output is expanded into B*n
  ablated copies inside one forward pass, so the layers before it run once per chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.attributions.activations import (
    forward_with_activation,
    gradient_at,
    replace_layer_output,
    resolve_cam_layer,
    target_scores,
)
from saliencybench.core.outputs import class_probabilities
from saliencybench.core.registry import register_method
from saliencybench.core.tensors import fast_layout


def _weighted(acts: Tensor, weights: Tensor) -> Tensor:
    return (weights.view(*weights.shape[:2], 1, 1) * acts).sum(1, keepdim=True).clamp(min=0)


def gradcam(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eq. 1-2) at ``layer``, (B,1,h,w).

    Defaults: ``layer=None`` (the model's ``cam`` layer, the last conv stage, as in the
    paper)."""
    grad, act = gradient_at(model, x, target, resolve_cam_layer(model, layer))
    return _weighted(act, grad.mean((2, 3)))


def gradcam_pp(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None,
               eps: float = 1e-6) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018, Eq. 19; pytorch-grad-cam's form), (B,1,h,w).

    Defaults: ``layer=None`` (the model's ``cam`` layer, the last conv stage, as in the
    paper), ``eps=1e-06`` in the denominator of α (pytorch-grad-cam's value)."""
    grad, act = gradient_at(model, x, target, resolve_cam_layer(model, layer))
    g2 = grad * grad
    g3 = g2 * grad
    alpha = g2 / (2 * g2 + act.sum((2, 3), keepdim=True) * g3 + eps)
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    return _weighted(act, (alpha * grad.clamp(min=0)).sum((2, 3)))


def layercam(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None) -> Tensor:
    """Layer-CAM (Jiang et al. 2021, Eq. 5-6), (B,1,h,w).

    Defaults: ``layer=None`` (the model's ``cam`` layer, the last conv stage, as in the
    paper)."""
    grad, act = gradient_at(model, x, target, resolve_cam_layer(model, layer))
    return (grad.clamp(min=0) * act).sum(1, keepdim=True).clamp(min=0)


def _channel_masked_scores(model: nn.Module, x: Tensor, target: Tensor, act: Tensor, *,
                           align_corners: bool, eps: float, probability: bool,
                           internal_batch_size: int) -> tuple[Tensor, Tensor]:
    """Target scores of the input masked by each channel's upsampled, min-max normalised map.

    Returns ``(scores, constant)``, both (B,K): the target's softmax probability
    (``probability``) or logit for every non-constant channel, and which channels are
    constant (their scores are left at 0). All B*K' masked inputs are evaluated in
    chunks of ``internal_batch_size``, with no per-sample loop."""
    b, k = act.shape[:2]
    constant = act.flatten(2).amax(2) == act.flatten(2).amin(2)
    scores = torch.zeros(b, k, dtype=act.dtype, device=x.device)
    bi, ki = torch.nonzero(~constant, as_tuple=True)
    chunk = max(1, int(internal_batch_size))
    for lo in range(0, bi.shape[0], chunk):
        cb, ck = bi[lo:lo + chunk], ki[lo:lo + chunk]
        up = F.interpolate(act[cb, ck].unsqueeze(1), size=x.shape[-2:], mode="bilinear",
                           align_corners=align_corners)
        # min-max of the *upsampled* map (its extremes can lie between the layer's pixels)
        lo_ = up.flatten(1).amin(1).view(-1, 1, 1, 1)
        hi_ = up.flatten(1).amax(1).view(-1, 1, 1, 1)
        span = hi_ - lo_ + eps
        up = (up - lo_) / torch.where(span > 0, span, torch.ones_like(span))
        out = model(fast_layout(x[cb] * up))
        if probability:
            out = class_probabilities(model, out.float()).to(act.dtype)  # per head on grid models
        scores[cb, ck] = target_scores(out, target[cb])
        flat = (hi_ == lo_).view(-1)
        if bool(flat.any()):  # constant only after resampling: no ranking, as a constant channel
            constant[cb[flat], ck[flat]] = True
    return scores, constant


@torch.no_grad()
def scorecam(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None,
             internal_batch_size: int = 128) -> Tensor:
    """Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for
    CNNs", CVPR-W, §3-4 and Algorithm 1, and the authors' code github:haofanwang/Score-CAM),
    (B,1,h,w) at ``layer``.

    Channel k's activation A_k is upsampled to the input size (bilinear,
    ``align_corners=False``) and min-max normalised to H_k; its weight is the target class's
    softmax probability on the masked input, ``α_k = softmax(f(X ∘ H_k))_c`` (the channel-wise
    increase of confidence, scored as a probability without subtracting a baseline score, as
    the authors' code does); channels whose upsampled map is constant are skipped (weight 0),
    as in the authors' code. ``L = ReLU(Σ_k α_k A_k)`` at the layer's resolution;
    post-processing upsamples it bilinearly (the authors' code applies the ReLU after
    upsampling: identical wherever the sum is non-negative, e.g. at post-ReLU layers).
    Defaults: ``layer=None`` (the model's ``cam`` layer, the last conv stage, as in the
    paper), ``internal_batch_size=128`` masked inputs per forward (no effect on values).
    The pytorch-grad-cam variant (a softmax across channels of the masked logits) is
    registered as ``scorecam_pgc``."""
    name = resolve_cam_layer(model, layer)
    _, act = forward_with_activation(model, x, name)
    act = act.detach()
    scores, constant = _channel_masked_scores(model, x, target, act, align_corners=False, eps=0.0,
                                              probability=True,
                                              internal_batch_size=internal_batch_size)
    return _weighted(act, torch.where(constant, torch.zeros_like(scores), scores))


@torch.no_grad()
def scorecam_pgc(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None,
                 internal_batch_size: int = 128) -> Tensor:
    """Score-CAM as pytorch-grad-cam implements it (a library variant, not Wang et al. 2020's
    weights), (B,1,h,w): each channel, upsampled with ``align_corners=True`` and min-max
    normalised (with +1e-8 in the denominator), masks the input; the target *logits* of the
    masked inputs, softmaxed *across channels*, weight the channels. A constant channel gives
    the all-zero mask and the logit of the zero input. Defaults: ``layer=None`` (the model's
    ``cam`` layer), ``internal_batch_size=128`` masked inputs per forward (no effect on
    values); kept for the cross-check against pytorch-grad-cam's ``ScoreCAM``."""
    name = resolve_cam_layer(model, layer)
    _, act = forward_with_activation(model, x, name)
    act = act.detach()
    b, k = act.shape[:2]
    scores, constant = _channel_masked_scores(model, x, target, act, align_corners=True, eps=1e-8,
                                              probability=False,
                                              internal_batch_size=internal_batch_size)
    if bool(constant.any()):  # normalised map is all zero: the masked input is all zero
        zero_scores = target_scores(model(torch.zeros_like(x)), target)
        scores[constant] = zero_scores.view(-1, 1).expand(b, k)[constant]
    return _weighted(act, torch.softmax(scores, dim=1))


@torch.no_grad()
def ablationcam(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None,
                internal_batch_size: int = 128) -> Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020, Eq. 2-3): channel k set to zero; (B,1,h,w).

    pytorch-grad-cam sets the channel to 0 only when the layer's minimum is 0 (post-ReLU
    layers) and to ``min - 1e7`` otherwise; the paper, followed here, zeroes it.

    Defaults: ``layer=None`` (the model's ``cam`` layer, the last conv stage, as in the
    paper), ``internal_batch_size=128`` ablated copies per forward (no effect on values).
    """
    name = resolve_cam_layer(model, layer)
    logits, act = forward_with_activation(model, x, name)
    act = act.detach()
    base = target_scores(logits, target).detach()
    b, k = act.shape[:2]
    n = max(1, min(k, int(internal_batch_size) // max(1, b)))
    ablated = torch.empty(b, k, dtype=act.dtype, device=x.device)
    for lo in range(0, k, n):
        ch = torch.arange(lo, min(lo + n, k), device=x.device)
        m = ch.shape[0]

        def expand(out: Tensor, ch: Tensor = ch, m: int = m) -> Tensor:
            rep = out.unsqueeze(1).repeat(1, m, *([1] * (out.ndim - 1)))
            rep[:, torch.arange(m, device=out.device), ch] = 0
            return rep.flatten(0, 1)

        if name is None:  # at the input: the image's channels are ablated
            out = model(fast_layout(expand(act)))
        else:
            with replace_layer_output(model, name, expand):
                out = model(x)
        ablated[:, lo:lo + m] = target_scores(out, target.repeat_interleave(m)).view(b, m)
    weights = (base.view(-1, 1) - ablated) / base.view(-1, 1)
    return _weighted(act, weights)


_LAYER = {"layer": None}
register_method("gradcam", family="cam", paper="Selvaraju et al. 2017; Rao et al. 2022; Jeon et al. 2022",
                defaults=_LAYER, postprocess=("sum",))(gradcam)
register_method("gradcam_pp", family="cam", paper="Chattopadhyay et al. 2018",
                defaults=_LAYER, postprocess=("sum",))(gradcam_pp)
register_method("layercam", family="cam", paper="Jiang et al. 2021; Rao et al. 2022",
                defaults=_LAYER, postprocess=("sum",))(layercam)
register_method("scorecam", family="cam",
                paper="Wang et al. 2020 (Algorithm 1; github:haofanwang/Score-CAM); Rao et al. 2022",
                defaults=_LAYER, postprocess=("sum",))(scorecam)
register_method("scorecam_pgc", family="cam",
                paper="pytorch-grad-cam's ScoreCAM (softmax across channels; a library variant "
                      "of Wang et al. 2020)",
                defaults=_LAYER, postprocess=("sum",))(scorecam_pgc)
register_method("ablationcam", family="cam", paper="Desai & Ramaswamy 2020; Rao et al. 2022",
                defaults=_LAYER, postprocess=("sum",))(ablationcam)
