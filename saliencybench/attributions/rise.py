"""RISE (Petsiuk et al. 2018): randomly masked inputs evaluated in large batches.

The masks multiply the *normalised* input, so a masked pixel is the dataset mean colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.attributions.activations import (
    forward_with_activation,
    replace_layer_output,
    resolve_attribution_layer,
)
from saliencybench.core.outputs import class_probabilities
from saliencybench.core.registry import register_method
from saliencybench.core.seeding import per_sample_rand
from saliencybench.core.tensors import fast_layout


def rise_masks(seeds: Sequence[int], n_masks: int, grid: int, p1: float, size: tuple[int, int],
               device: torch.device | str, start: int = 0, stop: int | None = None) -> Tensor:
    """RISE masks ``[start, stop)`` of every sample: (B, n, 1, H, W) in [0,1].

    Petsiuk et al. 2018 §3.2: binary s x s grids with P(1) = p1, bilinearly upsampled to
    (s+1) x cell size and cropped with a random shift in [0, cell). The grid and shift of
    mask i of sample b depend only on (seed_b, i), so batching never changes a mask.
    """
    stop = n_masks if stop is None else stop
    return masks_from_draws(mask_draws(seeds, n_masks, grid, device)[:, start:stop], grid, p1, size)


def mask_draws(seeds: Sequence[int], n_masks: int, grid: int, device: torch.device | str) -> Tensor:
    """The uniform draws of every mask, (B, n_masks, grid^2 + 2) float64: drawn on the CPU from
    the per-sample seeds (the same numbers on every device), moved to ``device`` once."""
    return per_sample_rand(seeds, (n_masks, grid * grid + 2), "cpu", torch.float64).to(device)


def masks_from_draws(draws: Tensor, grid: int, p1: float, size: tuple[int, int]) -> Tensor:
    """Masks (B, n, 1, H, W) from their draws (B, n, grid^2 + 2) (:func:`rise_masks`), on the
    draws' device: one threshold, one bilinear upsampling and one two-step crop for all."""
    H, W = size
    ch, cw = math.ceil(H / grid), math.ceil(W / grid)
    b, n = draws.shape[:2]
    cells = (draws[..., : grid * grid] < p1).to(torch.float32).view(b * n, 1, grid, grid)
    up = F.interpolate(cells, size=((grid + 1) * ch, (grid + 1) * cw), mode="bilinear",
                       align_corners=False)
    dy = (draws[..., -2] * ch).long().clamp(max=ch - 1).view(-1, 1, 1, 1)
    dx = (draws[..., -1] * cw).long().clamp(max=cw - 1).view(-1, 1, 1, 1)
    rows = dy + torch.arange(H, device=draws.device).view(1, 1, H, 1)
    cols = dx + torch.arange(W, device=draws.device).view(1, 1, 1, W)
    crop = up.gather(2, rows.expand(-1, 1, H, up.shape[-1])).gather(3, cols.expand(-1, 1, H, W))
    return crop.view(b, n, 1, H, W)


@dataclass(frozen=True)
class Chunking:
    """How RISE splits its work (memory only, no effect on values): ``internal_batch_size``
    masked images per forward, ``mask_chunk`` masks generated at a time."""

    internal_batch_size: int = 256
    mask_chunk: int = 250


@torch.no_grad()
def rise(model: nn.Module, x: Tensor, target: Tensor, *, seeds: Sequence[int], n_masks: int = 1000,
         grid: int = 6, p1: float = 0.1, layer: str | None = None, **chunking: int) -> Tensor:
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
    ``mask_chunk=250`` (:class:`Chunking`; memory only, no effect on values), ``layer=None`` (masks on the input,
    Petsiuk et al. 2018)."""
    chunks = Chunking(**chunking)
    internal_batch_size, mask_chunk = chunks.internal_batch_size, chunks.mask_chunk
    name = resolve_attribution_layer(model, layer)
    if name is not None:
        _, act = forward_with_activation(model, x, name)
        act = act.detach()
    else:
        act = x
    b = x.shape[0]
    size = (int(act.shape[-2]), int(act.shape[-1]))
    draws = mask_draws(seeds, n_masks, grid, x.device)
    if name is None:  # masked copies inherit the layout: channels-last on CPU
        act = fast_layout(act)
    sal = torch.zeros(b, 1, size[0] * size[1], dtype=act.dtype, device=x.device)
    for lo in range(0, n_masks, mask_chunk):
        masks = masks_from_draws(draws[:, lo:lo + mask_chunk], grid, p1, size).to(act.dtype)
        probs = _masked_probs(model, (act, x, target), masks, name, internal_batch_size)
        sal += torch.bmm(probs.unsqueeze(1), masks.flatten(2))  # sum_i p_i M_i per sample
    sal = sal.view(b, 1, *size)
    return sal / (n_masks * p1)


def _masked_probs(model: nn.Module, inputs: tuple[Tensor, Tensor, Tensor], masks: Tensor, name: str | None,
                  internal_batch_size: int) -> Tensor:
    """(B, n) target probabilities of the activations / inputs ``act`` times each mask (B, n, 1, H, W),
    ``internal_batch_size`` masked copies per forward; ``inputs`` = (act, x, target)."""
    act, x, target = inputs
    b, n = masks.shape[:2]
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
    return probs


register_method("rise", family="perturbation",
                paper="Petsiuk et al. 2018; Rao et al. 2022 supp. H (N=1000, s=6, p1=0.1)",
                defaults={"n_masks": 1000, "grid": 6, "p1": 0.1},
                postprocess=("sum",), stochastic=True)(rise)
