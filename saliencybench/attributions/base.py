"""The call path of every attribution method: model guard, defaults, post-processing.

Contract of a registered method: ``fn(model, x, target, **kw) -> Tensor`` with ``x`` the
normalised (B,C,H,W) input, ``target`` (B,) class indices, output (B,C,H,W) or (B,1,H,W) on
``x.device``. A method must leave the model exactly as it found it; :func:`model_guard`
enforces that around every call (hooks, ``requires_grad``, train/eval mode restored in
``finally``; in-place weight changes detected and reported).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from saliencybench.attributions.postprocess import apply_postprocess
from saliencybench.benchmark.registry import METHODS, Entry


class NotApplicableError(Exception):
    """Raised by a method that does not apply to a model (e.g. ``lrp_resnet`` on a VGG).

    The runner writes no rows for that (method, model) pair, so its leaderboard cells stay
    empty instead of showing an error.
    """


class ModelMutationError(RuntimeError):
    """A method or metric changed the model's weights or buffers in place."""


_HOOK_ATTRS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: {a: dict(getattr(m, a)) for a in _HOOK_ATTRS if hasattr(m, a)}
            for n, m in model.named_modules()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "versions": {n: t._version for n, t in _tensors(model)},
        "tensor_hooks": {n: dict(p._backward_hooks or {}) for n, p in model.named_parameters()},
    }


def _tensors(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    yield from model.named_parameters()
    yield from ((f"buffer:{n}", b) for n, b in model.named_buffers())


def _restore(model: nn.Module, snap: dict[str, Any]) -> list[str]:
    """Restore modes, hooks and flags; return what had changed (for error messages)."""
    changed: list[str] = []
    modules = dict(model.named_modules())
    for n, training in snap["training"].items():
        m = modules.get(n)
        if m is not None and m.training != training:
            changed.append(f"mode of '{n or 'model'}'")
            m.training = training
    for n, hooks in snap["hooks"].items():
        m = modules.get(n)
        if m is None:
            continue
        for attr, saved in hooks.items():
            current = getattr(m, attr)
            if set(current) != set(saved):
                changed.append(f"{attr} of '{n or 'model'}'")
                current.clear()
                current.update(saved)
    for n, p in model.named_parameters():
        if n in snap["requires_grad"] and p.requires_grad != snap["requires_grad"][n]:
            changed.append(f"requires_grad of '{n}'")
            p.requires_grad_(snap["requires_grad"][n])
        saved_hooks = snap["tensor_hooks"].get(n, {})
        if p._backward_hooks is not None and set(p._backward_hooks) != set(saved_hooks):
            changed.append(f"tensor hooks of '{n}'")
            p._backward_hooks.clear()
            p._backward_hooks.update(saved_hooks)
        if p.grad is not None and n in snap["requires_grad"]:
            p.grad = None
    return changed


@contextlib.contextmanager
def model_guard(model: nn.Module, *, who: str = "method") -> Iterator[nn.Module]:
    """Run a method or metric on ``model`` and put everything back afterwards.

    Modes, hooks (module and parameter), ``requires_grad`` flags and ``.grad`` are restored
    in ``finally`` even when the body raises. A weight or buffer modified in place cannot
    be restored without a copy, so it raises :class:`ModelMutationError` instead.
    """
    snap = _snapshot(model)
    grads = {n: p.grad for n, p in model.named_parameters()}
    ok = False
    try:
        yield model
        ok = True
    finally:
        _restore(model, snap)
        for n, p in model.named_parameters():
            p.grad = grads.get(n)
        if ok:
            moved = [n for n, t in _tensors(model) if t._version != snap["versions"].get(n, t._version)]
            if moved:
                raise ModelMutationError(
                    f"{who} modified the model in place: {', '.join(moved[:5])}"
                    + (" ..." if len(moved) > 5 else "")
                )


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, identical across processes and platforms."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def per_sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, so stochastic methods do not depend on batch layout."""
    gens = []
    for s in seeds:
        g = torch.Generator()
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def per_sample_randn(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, *shape) standard normal noise, sample b drawn from its own seeded generator."""
    gens = per_sample_generators(seeds)
    return torch.stack([torch.randn(*shape, generator=g, dtype=dtype) for g in gens]).to(device)


def per_sample_rand(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, *shape) uniform [0,1) noise, sample b drawn from its own seeded generator."""
    gens = per_sample_generators(seeds)
    return torch.stack([torch.rand(*shape, generator=g, dtype=dtype) for g in gens]).to(device)


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
    out = out.detach()
    if out.ndim == 3:
        out = out.unsqueeze(1)
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
