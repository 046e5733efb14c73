"""Distilled Gradient Aggregation (Jeon, Jeong, Choi, NeurIPS 2022; supp. Alg. F).

For step n = 1..N on the distillation sequence that starts at the input:

1. local attribution ``a`` at the current input (``uniform_fullgrad`` or ``ixg``);
2. WC mask: ``1 - [|a| <= quantile(|a|, n/N)]`` (weak contributors removed, more each step);
3. EPC mask: ``1 - [a >= quantile(a, q)]`` (extremely positive contributors removed);
4. combined mask ``(n/N) WC + (1 - n/N) EPC``; the next input is the *original* input times
   the mask (in the normalised space, so a removed feature takes the mean colour);
5. the attribution accumulates ``relu(a)``; the result is the mean over the N steps.

Defaults N=30, q=0.9 (supp. K). Variants ``dga_w`` (WC only) and ``dga_e`` (EPC only) are
those of supp. Table 2. Quantiles are per sample over all features (linear interpolation,
``torch.quantile``), so a batch equals single calls.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saliencybench.attributions.fullgrad import uniform_fullgrad
from saliencybench.attributions.gradient import input_x_gradient
from saliencybench.core.registry import register_method

LOCAL_ATTRIBUTIONS = {"uniform_fullgrad": uniform_fullgrad, "ixg": input_x_gradient}


def _quantile(a: Tensor, q: float) -> Tensor:
    return torch.quantile(a.flatten(1), q, dim=1).view(-1, *([1] * (a.ndim - 1)))


def dga(model: nn.Module, x: Tensor, target: Tensor, *, steps: int = 30, epc_quantile: float = 0.9,
        local: str = "uniform_fullgrad", masks: str = "both") -> Tensor:
    """DGA attribution (Jeon et al. 2022, supp. Alg. F); ``masks`` is both / wc / epc.

    Defaults, from the paper's Algorithm F listing: ``steps=30`` (``n_steps``, N=30),
    ``epc_quantile=0.9`` (``epc_ratio``, q=0.9), ``local="uniform_fullgrad"`` (the local
    attribution of §3), and ``masks="both"`` for ``dga``, ``masks="wc"`` for ``dga_w`` and
    ``masks="epc"`` for ``dga_e`` (the ablations of supp. Table 2)."""
    if local not in LOCAL_ATTRIBUTIONS:
        raise ValueError(f"unknown DGA local attribution '{local}'; choose from {sorted(LOCAL_ATTRIBUTIONS)}")
    if masks not in ("both", "wc", "epc"):
        raise ValueError("masks must be 'both', 'wc' or 'epc'")
    local_fn = LOCAL_ATTRIBUTIONS[local]
    x = x.detach()
    cur = x
    total: Tensor | None = None
    for step in range(steps):
        a = local_fn(model, cur, target).detach()
        ratio = (step + 1) / steps
        wc = 1 - (a.abs() <= _quantile(a.abs(), ratio)).to(a.dtype)
        epc = 1 - (a >= _quantile(a, epc_quantile)).to(a.dtype)
        mask = {"both": ratio * wc + (1 - ratio) * epc, "wc": wc, "epc": epc}[masks]
        total = a.clamp(min=0) if total is None else total + a.clamp(min=0)
        cur = x * mask
    assert total is not None
    return total / steps


_PAPER = "Jeon, Jeong, Choi 2022 (NeurIPS), supp. Alg. F"
_DEFAULTS = {"steps": 30, "epc_quantile": 0.9, "local": "uniform_fullgrad"}
register_method("dga", family="gradient", paper=_PAPER, defaults={**_DEFAULTS, "masks": "both"},
                postprocess=("sum",))(dga)
register_method("dga_w", family="gradient", paper=f"{_PAPER}; supp. Table 2 (WC only)",
                defaults={**_DEFAULTS, "masks": "wc"}, postprocess=("sum",))(dga)
register_method("dga_e", family="gradient", paper=f"{_PAPER}; supp. Table 2 (EPC only)",
                defaults={**_DEFAULTS, "masks": "epc"}, postprocess=("sum",))(dga)
