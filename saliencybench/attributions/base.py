"""The call path of every attribution method: model guard, defaults, post-processing.

Contract of a registered method: ``fn(model, x, target, **kw) -> Tensor`` with ``x`` the
normalised (B,C,H,W) input, ``target`` (B,) class indices, output (B,C,H,W) or (B,1,H,W) on
``x.device``. A method must leave the model exactly as it found it; :func:`model_guard`
enforces that around every call (hooks, ``requires_grad``, train/eval mode restored in
``finally``; in-place weight changes detected and reported).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from saliencybench.attributions.postprocess import apply_postprocess
from saliencybench.core.guard import model_guard
from saliencybench.core.registry import METHODS, Entry
from saliencybench.core.seeding import stable_seed
from saliencybench.core.tensors import as_map_batch


def method_params(entry: Entry, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Registry defaults merged with suite overrides (``postprocess`` handled separately)."""
    params = dict(entry.meta.get("defaults", {}))
    params.update({k: v for k, v in (overrides or {}).items() if k != "postprocess"})
    return params


def compute_attribution(
    method: str | Entry,
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    params: dict[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    reduce: bool = True,
) -> Tensor:
    """Call a registered method under the model guard and apply its post-processing.

    Args:
        method: registry name or entry.
        x: normalised input (B,C,H,W); never modified.
        target: (B,) class indices.
        params: overrides of the registry defaults; ``postprocess`` may override the steps.
        seeds: per-sample seeds, passed as ``seeds=`` to stochastic methods.
        reduce: False keeps channels and signs (skips channel reductions and absolute
            values) for metrics such as MIA that use signed per-channel maps.

    Returns:
        (B,1,H,W) float tensor on ``x.device`` (or (B,C,H,W) when ``reduce=False``).
    """
    entry = METHODS.get(method) if isinstance(method, str) else method
    raw = raw_attribution(entry, model, x, target, params=params, seeds=seeds)
    return finish_attribution(entry, raw, x, params=params, reduce=reduce)


def raw_attribution(entry: Entry, model: nn.Module, x: Tensor, target: Tensor, *,
                    params: dict[str, Any] | None = None, seeds: Sequence[int] | None = None) -> Tensor:
    """The method's own output under the model guard, before post-processing (4-D, detached)."""
    kw = method_params(entry, params)
    if entry.meta.get("stochastic"):
        if seeds is None:
            seeds = [stable_seed(entry.name, i) for i in range(x.shape[0])]
        kw["seeds"] = list(seeds)
    target = torch.as_tensor(target, device=x.device).long().view(-1)
    if target.shape[0] != x.shape[0]:
        raise ValueError(f"target has {target.shape[0]} entries for a batch of {x.shape[0]}")
    with model_guard(model, who=f"method '{entry.name}'"):
        with torch.enable_grad():
            out = entry.obj(model, x.detach(), target, **kw)
    if not isinstance(out, Tensor):
        raise TypeError(f"method '{entry.name}' returned {type(out).__name__}, expected a Tensor")
    out = as_map_batch(out.detach())
    if out.ndim != 4 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"method '{entry.name}' returned shape {tuple(out.shape)}; expected (B,C,H,W) or (B,1,H,W)"
        )
    return out


def postprocess_steps(entry: Entry, params: dict[str, Any] | None = None) -> tuple[str, ...]:
    return tuple((params or {}).get("postprocess", entry.meta.get("postprocess", ("sum",))))


def finish_attribution(entry: Entry, raw: Tensor, x: Tensor, *, params: dict[str, Any] | None = None,
                       reduce: bool = True) -> Tensor:
    """Apply the entry's (or overridden) post-processing to a raw output; float32 result."""
    out = apply_postprocess(raw, postprocess_steps(entry, params), size=x.shape[-2:], reduce=reduce)
    return out.float()
