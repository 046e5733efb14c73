"""Occlusion (Zeiler & Fergus 2014): every occluded input evaluated in large batches.

It perturbs the *normalised* input, so "zero" is the dataset mean colour (Captum's Occlusion
default baseline is 0 in the same space).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.attributions.activations import (
    forward_with_activation,
    replace_layer_output,
    resolve_attribution_layer,
    target_scores,
)
from saliencybench.core.registry import register_method
from saliencybench.core.tensors import fast_layout


def _window_masks(windows: Tensor, n_h: int, n_w: int, size: tuple[int, int], kernel: int,
                  stride: int) -> Tensor:
    """(n,1,H,W) binary masks of the occlusion windows with flat indices ``windows``.

    The windows tile a canvas of ``(n-1) * stride + kernel >= size`` per axis; cropping it to
    ``size`` clips the last window at the border, as Captum does."""
    onehot = F.one_hot(windows, n_h * n_w).to(torch.float32)  # (n, L)
    cols = onehot.unsqueeze(1).expand(-1, kernel * kernel, -1)
    return _fold_cropped(cols, n_h, n_w, size, kernel, stride).clamp_(max=1)


def _fold_cropped(cols: Tensor, n_h: int, n_w: int, size: tuple[int, int], kernel: int,
                  stride: int) -> Tensor:
    """``F.fold`` onto the canvas the ``n_h x n_w`` windows span, cropped to ``size``."""
    canvas = ((n_h - 1) * stride + kernel, (n_w - 1) * stride + kernel)
    return F.fold(cols, canvas, kernel_size=kernel, stride=stride)[..., : size[0], : size[1]]


def occlusion_window_counts(size: int, kernel: int, stride: int) -> int:
    """Windows per axis, ``ceil((size - kernel) / stride) + 1`` (Captum's count): the last one
    starts before the border and is clipped there, so every row and column is covered."""
    return -(-(size - kernel) // stride) + 1


@torch.no_grad()
def occlusion(model: nn.Module, x: Tensor, target: Tensor, *, window: int | None = None,
              stride: int | None = None, baseline: float = 0.0, layer: str | None = None,
              internal_batch_size: int = 256) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014) with K x K patches and stride s (Rao et al. 2022 supp.
    H: K=16, s=8 at the input; K=5, s=2 at feature maps, the defaults when ``window`` /
    ``stride`` are None; ``baseline=0.0``, the occluding value in normalised space, as Captum's
    default). Every pixel gets the mean drop ``f_c(x) - f_c(x_occluded)`` over the windows
    covering it, as Captum's Occlusion. Windows cover every row and column: there are
    ``ceil((size - K) / s) + 1`` per axis and the last one is clipped at the border (Captum's
    count and clipping), so no trailing rows / columns are left at 0 when ``(size - K)`` is
    not a multiple of ``s``. Returns (B,1,h,w).

    With ``layer`` the patches occlude all channels of that layer's activation; the layer
    output is expanded into the B*n occluded copies inside one forward pass.

    Defaults: ``window=None``, ``stride=None`` (K=16, s=8 at the input, K=5, s=2 at a layer:
    Rao et al. 2022 supp. H), ``baseline=0.0``, ``layer=None`` (the input),
    ``internal_batch_size=256`` occluded images per forward (no effect on values).
    """
    name = resolve_attribution_layer(model, layer)
    kernel = int(window if window is not None else (16 if name is None else 5))
    step = int(stride if stride is not None else (8 if name is None else 2))
    logits, act = forward_with_activation(model, x, name)
    act = act.detach()
    base_score = target_scores(logits, target).detach()
    b = x.shape[0]
    h, w = act.shape[-2:]
    kernel = min(kernel, h, w)
    n_h, n_w = occlusion_window_counts(h, kernel, step), occlusion_window_counts(w, kernel, step)
    n_win = n_h * n_w
    drops = torch.empty(b, n_win, dtype=act.dtype, device=x.device)
    per_chunk = max(1, int(internal_batch_size) // b)
    for lo in range(0, n_win, per_chunk):
        win = torch.arange(lo, min(lo + per_chunk, n_win), device=x.device)
        masks = _window_masks(win, n_h, n_w, (h, w), kernel, step).to(act.dtype)  # (n,1,h,w)
        n = win.shape[0]
        occluded = act.unsqueeze(1) * (1 - masks) + baseline * masks  # (B,n,C,h,w)
        flat = occluded.flatten(0, 1)
        if name is None:
            out = model(fast_layout(flat))
        else:
            with replace_layer_output(model, name, lambda _o, flat=flat: flat):
                out = model(x[:1])
        drops[:, lo:lo + n] = base_score.view(-1, 1) - target_scores(
            out, target.repeat_interleave(n)).view(b, n)
    cols = drops.unsqueeze(1).expand(-1, kernel * kernel, -1)
    total = _fold_cropped(cols, n_h, n_w, (h, w), kernel, step)
    count = _fold_cropped(torch.ones_like(cols[:1]), n_h, n_w, (h, w), kernel, step)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


register_method("occlusion", family="perturbation",
                paper="Zeiler & Fergus 2014; Rao et al. 2022 supp. H (K=16 s=8 input, K=5 s=2 layers)",
                defaults={"window": None, "stride": None}, postprocess=("sum",))(occlusion)
