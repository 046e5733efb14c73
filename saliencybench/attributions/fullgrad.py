"""FullGrad and UniformFullGrad (full-gradient decomposition).

Srinivas & Fleuret 2019: for a ReLU network with eval-mode BN,
``f(x) = ∇_x f · x + Σ_layers Σ ∇_b f · b`` (Eq. 2, completeness). The bias-gradient map of a
layer is ``∂f/∂z ⊙ b`` at its output ``z``; for BatchNorm the bias is the effective
``β - γ μ / sqrt(σ² + ε)``. Bias maps are recorded per *call* (reused modules are fine), and
each layer output is cloned inside its hook so that an in-place ReLU after it cannot change
the tensor whose gradient is taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.attributions.activations import target_scores
from saliencybench.core.registry import register_method


def _effective_bias(module: nn.Module) -> Tensor | None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training:
            raise ValueError("FullGrad needs eval-mode BatchNorm")
        mean = module.running_mean if module.running_mean is not None else 0.0
        var = module.running_var if module.running_var is not None else 1.0
        weight = module.weight if module.weight is not None else 1.0
        bias = module.bias if module.bias is not None else 0.0
        eff = bias - mean * weight / torch.sqrt(var + module.eps)
        return eff if isinstance(eff, Tensor) else None
    if isinstance(module, nn.Conv2d) and module.bias is not None:
        return module.bias
    return None


def bias_gradients(model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
    """(∇_x f, [bias-gradient maps (B,C,h,w) of every conv / BN call], f_c(x)), detached."""
    outs: list[tuple[Tensor, Tensor]] = []
    handles = []

    def hook(module: nn.Module, _inp, out: Tensor) -> Tensor:
        bias = _effective_bias(module)
        if bias is None or not isinstance(out, Tensor) or out.ndim != 4:
            return out
        outs.append((out, bias.detach()))
        return out.clone()

    for m in model.modules():
        if _effective_bias(m) is not None:
            handles.append(m.register_forward_hook(hook))
    try:
        inp = x.detach().requires_grad_(True)
        scores = target_scores(model(inp), target)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(scores.sum(), [inp] + [o for o, _ in outs], allow_unused=True)
    maps = []
    for g, (o, bias) in zip(grads[1:], outs):
        g = torch.zeros_like(o) if g is None else g
        maps.append((g * bias.view(1, -1, 1, 1)).detach())
    return grads[0].detach(), maps, scores.detach()


def _abs_minmax(a: Tensor) -> Tensor:
    """FullGrad's post-processing ψ: |a|, then per sample minus min, divided by max."""
    a = a.abs()
    flat = a.flatten(1)
    a = a - flat.amin(1).view(-1, 1, 1, 1)
    mx = a.flatten(1).amax(1).view(-1, 1, 1, 1)
    return a / torch.where(mx > 0, mx, torch.ones_like(mx))


def fullgrad(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """FullGrad saliency (Srinivas & Fleuret 2019, Eq. 7): ``ψ(∇_x f ⊙ x) + Σ_l ψ(bias map_l)``
    with ψ = abs + per-sample min-max rescaling, maps upsampled bilinearly (align_corners=True
    as in the authors' code) and summed over channels. (B,1,H,W).

    Defaults: none (no keyword parameters; every bias of the model is used, as in the paper)."""
    grad, maps, _ = bias_gradients(model, x, target)
    size = x.shape[-2:]
    cam = _abs_minmax(grad * x).sum(1, keepdim=True)
    for m in maps:
        up = F.interpolate(_abs_minmax(m), size=size, mode="bilinear", align_corners=True)
        cam = cam + up.sum(1, keepdim=True)
    return cam


def spread_uniformly(m: Tensor, size: tuple[int, int]) -> Tensor:
    """Spread each cell of a (B,1,h,w) map evenly over the input pixels under it (nearest
    upsampling divided by the area ratio), so the total is preserved when H/h and W/w are
    integers."""
    up = F.interpolate(m, size=size, mode="nearest")
    return up * (m.shape[-2] * m.shape[-1]) / float(size[0] * size[1])


def uniform_fullgrad(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """UniformFullGrad, the local attribution of DGA (Jeon et al. 2022, §3 and supp. Fig. 1).

    Our reading of the paper's uniform post-processing (its Eq. 2 is not in the supplied
    supplement): FullGrad's decomposition kept *signed and unnormalised*, each layer's
    channel-summed bias-gradient map spread uniformly over the input pixels it covers and
    shared equally by the input channels, added to ``∇_x f ⊙ x``. For a ReLU network with
    eval BN and integer down-sampling factors the map sums to ``f_c(x)`` minus the biases of
    fully connected layers. Returns (B,C,H,W).

    Defaults: none (no keyword parameters).
    """
    grad, maps, _ = bias_gradients(model, x, target)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    total = torch.zeros(x.shape[0], 1, *size, dtype=x.dtype, device=x.device)
    for m in maps:
        total = total + spread_uniformly(m.sum(1, keepdim=True), size)
    return grad * x.detach() + total / x.shape[1]


register_method("fullgrad", family="gradient", paper="Srinivas & Fleuret 2019; baseline in Jeon et al. 2022",
                postprocess=("sum",))(fullgrad)
register_method("uniform_fullgrad", family="gradient",
                paper="Jeon et al. 2022 (DGA), UniformFullGrad post-processing of bias-gradients",
                postprocess=("sum",))(uniform_fullgrad)
