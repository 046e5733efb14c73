"""Gradient-family attribution methods: saliency, IxG, GxSI, PGxI, Guided Backprop, SmoothGrad.

Every method here accepts ``layer`` (None = the input; a module name or an alias
input / middle / final / cam) and then returns its map at that layer's activation
(Rao et al. 2022, "layer attribution"). Outputs are per channel (B,C,h,w); the registry
entry states the channel reduction.

Nonlinearity overrides (Guided Backprop here, the DeepLIFT rescale rule in
:mod:`saliencybench.attributions.deeplift`) are applied per *call* through a
``TorchFunctionMode`` that swaps ``relu`` / ``max_pool2d`` for custom autograd functions during
one forward pass. Nothing is keyed by module, so ResNets that reuse one ReLU module several
times per block are handled, and no hook is ever registered on the model.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from saliencybench.attributions.activations import (
    forward_with_activation,
    gradient_at,
    resolve_attribution_layer,
    target_scores,
)
from saliencybench.core.registry import METHODS, register_method
from saliencybench.core.seeding import per_sample_randn

_RELU_FUNCS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}


class NonlinearityOverride(TorchFunctionMode):
    """Replace ``relu`` (and optionally ``max_pool2d``) calls by other functions, per call.

    ``relu_fn(z) -> Tensor`` receives the pre-activation; in-place variants (``inplace=True``,
    ``relu_``) are answered out of place, which is what every caller that uses the return
    value (torchvision included) expects. ``maxpool_fn(z, kernel_size, stride, padding,
    dilation, ceil_mode)`` likewise for ``F.max_pool2d`` without ``return_indices``.
    """

    def __init__(self, relu_fn: Callable[[Tensor], Tensor],
                 maxpool_fn: Callable[..., Tensor] | None = None) -> None:
        super().__init__()
        self.relu_fn = relu_fn
        self.maxpool_fn = maxpool_fn

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if func in _RELU_FUNCS:
            return self.relu_fn(args[0])
        if self.maxpool_fn is not None and func is F.max_pool2d:
            p = _maxpool_params(*args, **kwargs)
            if not p.pop("return_indices"):
                return self.maxpool_fn(p.pop("input"), **p)
        return func(*args, **kwargs)


def _maxpool_params(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                    return_indices=False) -> dict[str, Any]:
    return dict(input=input, kernel_size=kernel_size, stride=stride if stride else kernel_size,
                padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                return_indices=return_indices)


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the forward input was positive
    (Springenberg et al. 2015, Guided Backpropagation)."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        out = z.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return g.clamp(min=0) * (out > 0).to(g.dtype)


def _layer_name(model: nn.Module, layer: str | None) -> str | None:
    return resolve_attribution_layer(model, layer)


def gradient(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None) -> Tensor:
    """Gradient of the target logit w.r.t. the input (or a layer's activation), per channel.

    Registered as ``saliency`` with ``abs_sum`` post-processing: the absolute gradient summed
    over channels (Simonyan et al. 2014; Rao et al. 2022 supp. H use the absolute value).
    Defaults: ``layer=None`` (the input; a module name or "input" /
    "middle" / "final" gives the attribution at that layer's activation, Rao et al. 2022 §4).
    """
    grad, _ = gradient_at(model, x, target, _layer_name(model, layer))
    return grad


def input_x_gradient(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None) -> Tensor:
    """Gradient x input (Shrikumar et al. 2016), at the input or a layer's activation.

    Registered as ``ixg`` and as ``s_ixg`` (Rao et al. 2022 §5.2: smoothed with a Gaussian of
    kernel 9, std 9/4, by post-processing).
    Defaults: ``layer=None`` (the input; a module name or "input" /
    "middle" / "final" gives the attribution at that layer's activation, Rao et al. 2022 §4)."""
    grad, act = gradient_at(model, x, target, _layer_name(model, layer))
    return grad * act


def gradient_x_sign_input(model: nn.Module, x: Tensor, target: Tensor, *,
                          layer: str | None = None) -> Tensor:
    """GxSI: gradient x sign(input) (Lee & Chang 2021, Eq. 13).

    Defaults: ``layer=None`` (the input; a module name or "input" /
    "middle" / "final" gives the attribution at that layer's activation, Rao et al. 2022 §4)."""
    grad, act = gradient_at(model, x, target, _layer_name(model, layer))
    return grad * torch.sign(act)


def positive_gradient_x_input(model: nn.Module, x: Tensor, target: Tensor, *,
                              layer: str | None = None) -> Tensor:
    """PGxI: relu(gradient) x input (Lee & Chang 2021, §4).

    Defaults: ``layer=None`` (the input; a module name or "input" /
    "middle" / "final" gives the attribution at that layer's activation, Rao et al. 2022 §4)."""
    grad, act = gradient_at(model, x, target, _layer_name(model, layer))
    return grad.clamp(min=0) * act


def guided_backprop(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | None = None) -> Tensor:
    """Guided Backpropagation (Springenberg et al. 2015): every ReLU call passes back only
    positive gradients at positive inputs. Per call, so reused ReLU modules are handled.

    Registered with ``abs_sum`` post-processing (Rao et al. 2022 supp. H use the absolute
    value).
    Defaults: ``layer=None`` (the input; a module name or "input" /
    "middle" / "final" gives the attribution at that layer's activation, Rao et al. 2022 §4)."""
    name = _layer_name(model, layer)
    with NonlinearityOverride(_GuidedReLU.apply):
        logits, act = forward_with_activation(model, x, name)
    (grad,) = torch.autograd.grad(target_scores(logits, target).sum(), act)
    return grad


def smoothgrad(model: nn.Module, x: Tensor, target: Tensor, *, seeds: Sequence[int],
               base: str = "saliency", noise_samples: int = 15, noise_level: float = 0.15,
               layer: str | None = None, **base_kw: Any) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017; Rao et al. 2022 supp. G): mean of a gradient method's
    raw maps over ``noise_samples`` noisy copies ``x + N(0, sigma^2)`` with
    ``sigma = noise_level * (max(x) - min(x))`` per sample.

    ``base`` is any registered method name (its raw output, before post-processing, is
    averaged; its registry defaults apply). Noise is drawn per sample from ``seeds`` so a
    batch equals single calls. Noisy copies are evaluated in chunks of
    ``internal_batch_size`` images (a keyword of smoothgrad itself, not passed to ``base``).

    Defaults: ``base="saliency"`` (the gradient, as Smilkov et al. 2017 §2), ``noise_samples=15``
    (Rao et al. 2022 supp. G, Fig. 26: 15 samples per input), ``noise_level=0.15`` (Smilkov et
    al. 2017 §3.2 recommend 10-20% of the input range), ``internal_batch_size=64`` (no effect
    on values), ``layer=None`` (the input).
    """
    if "n_samples" in base_kw:  # the name of the dataset size in a suite: renamed to avoid the clash
        raise TypeError("smoothgrad's number of noisy copies is 'noise_samples' (was 'n_samples')")
    internal_batch_size = base_kw.pop("internal_batch_size", 64)
    entry = METHODS.get(base)
    kw = dict(entry.meta.get("defaults", {}))
    kw.update(base_kw)
    if layer is not None:
        kw["layer"] = layer
    if entry.meta.get("stochastic"):
        raise ValueError("smoothgrad needs a deterministic base method")
    b = x.shape[0]
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(b, 1, 1, 1, 1)
    noise = per_sample_randn(seeds, (noise_samples, *x.shape[1:]), x.device, x.dtype)
    noisy = (x.unsqueeze(1) + noise_level * span * noise).reshape(b * noise_samples, *x.shape[1:])
    tgt = target.repeat_interleave(noise_samples)
    chunk = max(1, int(internal_batch_size))
    outs = [entry.obj(model, noisy[i:i + chunk], tgt[i:i + chunk], **kw).detach()
            for i in range(0, noisy.shape[0], chunk)]
    total = torch.cat(outs)
    return total.view(b, noise_samples, *total.shape[1:]).mean(1)


_RAO = "Rao, Böhle, Schiele 2022 (CVPR), supp. H"
_LEE = "Lee & Chang, Attribution Mask"

register_method("saliency", family="gradient", paper=f"Simonyan et al. 2014; {_RAO} (absolute value)",
                postprocess=("abs_sum",),
                description="absolute gradient of the target logit, summed over channels")(gradient)
register_method("ixg", family="gradient", paper=f"Shrikumar et al. 2016; {_RAO}",
                postprocess=("sum",))(input_x_gradient)
register_method("s_ixg", family="gradient", paper="Rao, Böhle, Schiele 2022 §5.2 (S-IxG)",
                postprocess=("sum", "gauss:9"),
                description="IxG smoothed with a Gaussian of kernel K, std K/4 (override "
                            "postprocess=['sum','gauss:K'] for another K)")(input_x_gradient)
register_method("gxsi", family="gradient", paper=f"{_LEE}, Eq. 13",
                postprocess=("sum",))(gradient_x_sign_input)
register_method("pgxi", family="gradient", paper=_LEE,
                postprocess=("sum",))(positive_gradient_x_input)
register_method("guided_backprop", family="gradient", paper=f"Springenberg et al. 2015; {_RAO}",
                postprocess=("abs_sum",))(guided_backprop)
register_method("smoothgrad", family="gradient",
                paper="Smilkov et al. 2017; Rao, Böhle, Schiele 2022 supp. G (15 samples)",
                defaults={"base": "saliency", "noise_samples": 15, "noise_level": 0.15},
                postprocess=("abs_sum",), stochastic=True,
                description="mean raw gradient over noisy copies, then |.| summed over channels")(smoothgrad)
