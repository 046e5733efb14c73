"""Perturbation methods: Occlusion and RISE, every perturbed input evaluated in large batches.

Both perturb the *normalised* input, so "zero" is the dataset mean colour (Captum's Occlusion
default baseline is 0 in the same space).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.attributions.layer import (
    forward_with_activation,
    replace_layer_output,
    resolve_attribution_layer,
    target_scores,
)
from saliencybench.core.registry import register_method
from saliencybench.core.seeding import per_sample_rand
from saliencybench.core.tensors import fast_layout
from saliencybench.core.outputs import class_probabilities


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


def rise_masks(seeds: Sequence[int], n_masks: int, grid: int, p1: float, size: tuple[int, int],
               device: torch.device | str, start: int = 0, stop: int | None = None) -> Tensor:
    """RISE masks ``[start, stop)`` of every sample: (B, n, 1, H, W) in [0,1].

    Petsiuk et al. 2018 §3.2: binary s x s grids with P(1) = p1, bilinearly upsampled to
    (s+1) x cell size and cropped with a random shift in [0, cell). The grid and shift of
    mask i of sample b depend only on (seed_b, i), so batching never changes a mask.
    """
    stop = n_masks if stop is None else stop
    H, W = size
    ch, cw = math.ceil(H / grid), math.ceil(W / grid)
    draws = per_sample_rand(seeds, (n_masks, grid * grid + 2), "cpu", torch.float64)
    draws = draws[:, start:stop].to(device)
    b, n = draws.shape[:2]
    cells = (draws[..., : grid * grid] < p1).to(torch.float32).view(b * n, 1, grid, grid)
    up = F.interpolate(cells, size=((grid + 1) * ch, (grid + 1) * cw), mode="bilinear",
                       align_corners=False)
    dy = (draws[..., -2] * ch).long().clamp(max=ch - 1).view(-1)
    dx = (draws[..., -1] * cw).long().clamp(max=cw - 1).view(-1)
    rows = (dy.view(-1, 1) + torch.arange(H, device=device)).view(-1, 1, H, 1).expand(-1, 1, H, W)
    cols = (dx.view(-1, 1) + torch.arange(W, device=device)).view(-1, 1, 1, W).expand(-1, 1, H, W)
    flat_idx = rows * up.shape[-1] + cols
    crop = up.flatten(2).gather(2, flat_idx.flatten(2)).view(b * n, 1, H, W)
    return crop.view(b, n, 1, H, W)


@torch.no_grad()
def rise(model: nn.Module, x: Tensor, target: Tensor, *, seeds: Sequence[int], n_masks: int = 1000,
         grid: int = 6, p1: float = 0.1, internal_batch_size: int = 256,
         mask_chunk: int = 250, layer: str | None = None) -> Tensor:
    """RISE (Petsiuk et al. 2018, Eq. 6): ``Σ_i p_c(x ⊙ M_i) M_i / (N p1)`` with the softmax
    probability of the target (per head on a grid model: the softmax of the selected head's
    own logits, Rao et al. 2022 §3.1); Rao et al. 2022 use N=1000, s=6, p1=0.1. Masks are generated
    on the device per sample from its seed, ``mask_chunk`` at a time, and evaluated in
    batches of ``internal_batch_size`` images. Returns (B,1,H,W).

    With ``layer`` (Rao et al. 2022 Fig. 9, RISE at the middle / final layers; the official
    code masks the activation at that layer) the masks have the layer's spatial size and
    multiply all channels of its activation; the rest of the network runs on the masked
    activations (B*n copies in one forward) and the map is (B,1,h,w) at the layer.

    Defaults: ``n_masks=1000`` (Rao et al. 2022 supp. H, M=1000), ``grid=6``, ``p1=0.1``
    (Rao et al. 2022's setting, as registered), ``internal_batch_size=256`` and
    ``mask_chunk=250`` (memory only, no effect on values), ``layer=None`` (masks on the input,
    Petsiuk et al. 2018)."""
    name = resolve_attribution_layer(model, layer)
    if name is not None:
        _, act = forward_with_activation(model, x, name)
        act = act.detach()
    else:
        act = x
    b = x.shape[0]
    size = (int(act.shape[-2]), int(act.shape[-1]))
    sal = torch.zeros(b, 1, *size, dtype=act.dtype, device=x.device)
    for lo in range(0, n_masks, mask_chunk):
        hi = min(lo + mask_chunk, n_masks)
        masks = rise_masks(seeds, n_masks, grid, p1, size, x.device, lo, hi).to(act.dtype)
        n = hi - lo
        probs = torch.empty(b, n, dtype=act.dtype, device=x.device)
        flat_masks = masks.flatten(0, 1)
        bi = torch.arange(b, device=x.device).repeat_interleave(n)
        for s in range(0, b * n, internal_batch_size):
            sl = slice(s, s + internal_batch_size)
            masked = act[bi[sl]] * flat_masks[sl]
            if name is None:
                out = model(fast_layout(masked))
            else:
                with replace_layer_output(model, name, lambda _o, masked=masked: masked):
                    out = model(x[:1])
            p = class_probabilities(model, out.float()).to(act.dtype)
            probs.view(-1)[sl] = p.gather(1, target[bi[sl]].view(-1, 1)).squeeze(1)
        sal += (probs.view(b, n, 1, 1, 1) * masks).sum(1)
    return sal / (n_masks * p1)


register_method("occlusion", family="perturbation",
                paper="Zeiler & Fergus 2014; Rao et al. 2022 supp. H (K=16 s=8 input, K=5 s=2 layers)",
                needs=("forward",), defaults={"window": None, "stride": None},
                postprocess=("sum",), layer_capable=True, fn=occlusion)
register_method("rise", family="perturbation",
                paper="Petsiuk et al. 2018; Rao et al. 2022 supp. H (N=1000, s=6, p1=0.1)",
                needs=("forward",), defaults={"n_masks": 1000, "grid": 6, "p1": 0.1},
                postprocess=("sum",), stochastic=True, layer_capable=True, fn=rise)
