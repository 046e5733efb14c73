"""The model guard: a method or metric leaves the model exactly as it found it.

Modes, hooks (module and parameter), ``requires_grad`` flags and ``.grad`` are restored in
``finally``; a weight or buffer modified in place raises :class:`ModelMutationError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn

from saliencybench.core.errors import ModelMutationError

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
