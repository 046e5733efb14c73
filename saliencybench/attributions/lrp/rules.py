"""LRP rules: how one layer hands the relevance of its output to its input, one class per rule.

Notation of Otsuki et al. 2024 (ECCV, §3.1): a layer maps ``h^(l)`` to ``h^(l+1)``;
``R^(l+1)`` is the relevance of its output and a rule returns ``R^(l)``. Every rule uses the
"gradient trick" of Otsuki et al. 2024 Eq. 3: with ``f'`` the modified linear map,
``R^(l) = h * (J_f'(h)^T (R^(l+1) / f'(h)))``, one vector-Jacobian product of a convolution /
linear / pooling layer for the whole batch. As in zennit, a rule is a small object and a new
rule is one class: subclass :class:`Rule` and implement :meth:`Rule.relevance`.

Stabiliser of the conservative rules: where ``z_j == 0`` exactly and ``R_j != 0`` (possible
after BatchNorm shifts, or with symmetric splitting), Otsuki et al. 2024 leave the rule
undefined; we then give ``R_j`` to the inputs in proportion to ``|w_ji|`` (a flat rule), which
keeps ``sum_i R_i = sum_j R_j`` exact and never produces NaN. Everywhere else the division is
unmodified (``stabilizer=0``) so conservation holds to float precision.
"""

from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LINEAR_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
POOL_TYPES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)


def _apply_linear(module: nn.Module, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The layer's own linear map with replaced parameters."""
    if isinstance(module, nn.Linear):
        return F.linear(h, weight, bias)
    conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(module)] \
        if type(module) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) else None
    if conv is None:  # a Conv subclass: dispatch on dimensionality
        conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[h.ndim]
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise NotImplementedError(f"LRP supports zero padding only, got {module.padding_mode!r}")
    return conv(h, weight, bias, module.stride, module.padding, module.dilation, module.groups)


def _vjp(fn, inputs: list[Tensor], grad_out: Tensor) -> tuple[Tensor, ...]:
    """Vector-Jacobian products of ``fn(*inputs)`` (the transposed linear map) in one call."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in inputs]
        out = fn(*leaves)
        return torch.autograd.grad(out, leaves, grad_out)


def _transposed(module: nn.Module, h: Tensor, weight: Tensor, s: Tensor) -> Tensor:
    """``J^T s`` of ``h -> _apply_linear(module, h, weight, None)``: the same kernel autograd calls
    (``convolution_backward`` / a matrix product), without building a graph (only ``h``'s shape
    and layout are read)."""
    if isinstance(module, nn.Linear):
        return s.matmul(weight)
    if isinstance(module.padding, str):  # padding="same" / "valid": let autograd resolve it
        (c,) = _vjp(lambda t: _apply_linear(module, t, weight, None), [h], s)
        return c
    nd = h.ndim - 2
    return torch.ops.aten.convolution_backward(
        s, h, weight, None, module.stride, module.padding, module.dilation, False, [0] * nd,
        module.groups, [True, False, False])[0]


def _stamp(t: Tensor | None) -> tuple | None:
    """What changes when a tensor is updated in place (version) or replaced (storage)."""
    return None if t is None else (t._version, t.data_ptr(), t.dtype, t.device, tuple(t.shape))


class WeightCache:
    """Values derived from parameters (clamped, folded kernels), computed once per owner module /
    parameter and reused until one of its tensors changes: an in-place update (optimizer step,
    ``load_state_dict``, ``copy_`` under ``no_grad``) bumps the tensor's version, a new tensor
    changes the storage. The entry dies with its owner (weakref finalizer), so models are not
    kept alive. (Writes through ``param.data`` bypass the version counter and are not seen.)"""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, tuple, Any]] = {}

    def get(self, owner: Any, tensors: tuple[Tensor | None, ...], compute: Callable[[], Any], extra: Any = None) -> Any:
        key = (extra, *(_stamp(t) for t in tensors))
        hit = self._entries.get(id(owner))
        if hit is not None and hit[0]() is owner and hit[1] == key:
            return hit[2]
        with torch.no_grad():
            value = compute()
        if hit is None or hit[0]() is not owner:
            weakref.finalize(owner, self._entries.pop, id(owner), None)
        self._entries[id(owner)] = (weakref.ref(owner), key, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)


_WPOS = WeightCache()
_ONES_Z = WeightCache()


def positive_weight(weight: Tensor) -> Tensor:
    """``max(0, W)`` (Otsuki et al. 2024 Eq. 2), cached per parameter until it changes (:class:`WeightCache`)."""
    return _WPOS.get(weight, (weight,), lambda: weight.detach().clamp(min=0))


# --------------------------------------------------------------------------- deferred checks
_CHECKS: ContextVar[list[Tensor] | None] = ContextVar("lrp_deferred_checks", default=None)


@contextmanager
def deferred_checks() -> Iterator[list[Tensor]]:
    """Within the block, :func:`_safe_ratio` does not synchronise per layer: ``0 / 0`` becomes 0
    on the device (as in the exact path) and the sums of the ratios are collected; the caller
    reruns the pass outside the block unless :func:`all_finite` holds, i.e. unless some nonzero
    relevance met a zero denominator (the flat fallback's case). Results are those of the
    per-layer checks either way."""
    checks: list[Tensor] = []
    token = _CHECKS.set(checks)
    try:
        yield checks
    finally:
        _CHECKS.reset(token)


def all_finite(checks: list[Tensor]) -> bool:
    """True when every collected sum is finite (one host synchronisation)."""
    return not checks or bool(torch.isfinite(torch.stack(checks)).all())


def _stabilize(z: Tensor, eps: float) -> Tensor:
    """``z + eps * sign(z)`` with sign(0) = +1 (zennit's convention)."""
    if eps == 0:
        return z
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _safe_ratio(r: Tensor, z: Tensor, eps: float) -> tuple[Tensor, Tensor | None]:
    """``r / stab(z)``; where ``z == 0`` the ratio is 0 (with ``eps > 0``: ``r / eps`` as in
    zennit). Returns the ratio and the mask of zero denominators (None when there is none),
    for the flat fallback. Fast path: one division and one reduction to detect 0/0 or x/0.
    """
    if eps > 0:  # the stabiliser decides; no fallback (zennit semantics)
        return r / _stabilize(z, eps), None
    checks = _CHECKS.get()
    if checks is not None:  # deferred (see deferred_checks): x / 0 stays infinite and is caught at the end
        s = (r / z).nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)  # in place: fewer ops
        checks.append(s.sum())
        return s, None
    s = r / z
    if bool(torch.isfinite(s.sum())):
        return s, None
    zero = z == 0
    den = torch.where(zero, torch.ones_like(z), z)
    return torch.where(zero, torch.zeros_like(r), r / den), zero


def _flat_fallback(fn, h: Tensor, r: Tensor, zero: Tensor | None) -> Tensor | None:
    """Relevance of outputs with ``z == 0`` spread in proportion to ``|w|`` (conservative)."""
    if zero is None:
        return None
    lost = zero & (r != 0)
    if not bool(lost.any()):
        return None
    ones = torch.ones_like(h)
    z_flat = fn(ones)
    s_flat, _ = _safe_ratio(torch.where(lost, r, torch.zeros_like(r)), z_flat, 0.0)
    (c,) = _vjp(fn, [ones], s_flat)
    return c


def _zplus_relevance(module: nn.Module, h: Tensor, r_out: Tensor, stabilizer: float,
                     z: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """z+ on ``h`` as it is: ``R_i = h_i sum_j w_ji^+ R_j / z_j`` and the mask of zero ``z_j``:
    one convolution for ``z`` (unless given) and one transposed for the sum, no autograd graph."""
    w_pos = positive_weight(module.weight)
    with torch.no_grad():
        z = _apply_linear(module, h, w_pos, None) if z is None else z
        s, zero = _safe_ratio(r_out, z, stabilizer)
        return h * _transposed(module, h, w_pos, s), zero


def _with_flat_fallback(module: nn.Module, h: Tensor, r_out: Tensor, r_in: Tensor, zero: Tensor | None) -> Tensor:
    """``r_in`` plus the relevance of zero-denominator outputs spread by ``|w|`` (module doc)."""
    w = module.weight.detach()
    extra = _flat_fallback(lambda t: _apply_linear(module, t, w.abs(), None), h, r_out, zero)
    return r_in if extra is None else r_in + extra


class Rule:
    """One layer's relevance rule: ``relevance(module, h, r_out) -> r_in`` (batched)."""

    #: the rule divides by the layer's own forward output ``W h + b`` (the engine keeps it)
    needs_output = False

    def denominator_kernel(self, module: nn.Module) -> Tensor | None:
        """The kernel ``V`` when the rule's denominator is ``z = V h`` (no bias) on the layer's own
        input: the engine may then compute ``z`` in the forward pass, stacked on the layer's kernel
        (one convolution), and pass it as ``z_forward``. None: the rule computes what it needs."""
        return None

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class ZPlus(Rule):
    """The z+ rule (Otsuki et al. 2024 Eq. 2-3; Montavon et al. 2017): ``z_j = sum_i w_ji^+ h_i``
    without bias, ``stabilizer * sign(z)`` added to the denominator (0: exact, with the flat
    fallback of the module doc)."""

    def __init__(self, stabilizer: float = 0.0) -> None:
        self.stabilizer = stabilizer

    def denominator_kernel(self, module: nn.Module) -> Tensor | None:
        return positive_weight(module.weight) if type(self) is ZPlus else None

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        r_in, zero = _zplus_relevance(module, h, r_out, self.stabilizer, z_forward)
        return _with_flat_fallback(module, h, r_out, r_in, zero)


class Alpha1Beta0(ZPlus):
    """z+ on signed inputs (alpha1beta0 of Bach et al. 2015, zennit's ``ZPlus(zero_params='bias')``):
    ``z_j = sum_i w_ji^+ h_i^+ + w_ji^- h_i^-``; equal to :class:`ZPlus` where ``h >= 0``."""

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        if not bool((h < 0).any()):
            return super().relevance(module, h, r_out)
        w_pos, w_neg = positive_weight(module.weight), module.weight.detach().clamp(max=0)
        h_pos, h_neg = h.clamp(min=0), h.clamp(max=0)

        def f_pair(a: Tensor, b: Tensor) -> Tensor:
            return _apply_linear(module, a, w_pos, None) + _apply_linear(module, b, w_neg, None)

        with torch.no_grad():
            z = f_pair(h_pos, h_neg)
        s, zero = _safe_ratio(r_out, z, self.stabilizer)
        c_pos, c_neg = _vjp(f_pair, [h_pos, h_neg], s)
        return _with_flat_fallback(module, h, r_out, h_pos * c_pos + h_neg * c_neg, zero)


class Epsilon(Rule):
    """The epsilon rule (Bach et al. 2015): ``z_j = sum_i w_ji h_i + b_j`` stabilised by
    ``epsilon * sign(z_j)`` (sign(0) = +1, as zennit's ``Epsilon``); relevance absorbed by the
    bias and the stabiliser is lost, so it is not conservative."""

    needs_output = True

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = epsilon

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        w = module.weight.detach()
        b = None if module.bias is None else module.bias.detach()
        z = z_forward if z_forward is not None else _apply_linear(module, h, w, b)
        if self.epsilon > 0:
            s = r_out / _stabilize(z, self.epsilon)
        else:
            s, _ = _safe_ratio(r_out, z, 0.0)
        (c,) = _vjp(lambda t: _apply_linear(module, t, w, None), [h], s)
        return h * c


# --------------------------------------------------------------------------- first layer
# Rules for the layer that sees the (signed, normalised) image, where z+ denominators can cross
# zero (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep Taylor
# decomposition", §4-5; the official code of Otsuki et al. 2024 uses WPlus). The bias is ignored.


class WPlus(Rule):
    """z+ with the image replaced by ones (zero padding stays zero), the w+ rule:
    ``R_i = sum_j w_ji^+ R_j / sum_i' w_ji'^+`` (official code of Otsuki et al. 2024). The
    denominator depends on the weights and the input size only: computed once and cached."""

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        w_pos = positive_weight(module.weight)
        z = _ONES_Z.get(module, (module.weight,), lambda: _apply_linear(module, torch.ones_like(h[:1]), w_pos, None),
                        extra=(tuple(h.shape[1:]), h.dtype, h.device))
        with torch.no_grad():
            s, zero = _safe_ratio(r_out, z, 0.0)
            r_in = _transposed(module, h, w_pos, s)
        return _with_flat_fallback(module, torch.ones_like(h), r_out, r_in, zero)


class Flat(Rule):
    """Every weight and input 1: ``R_i = sum_j R_j / n_j``, ``n_j`` the number of (non-padding)
    inputs of output ``j`` (Montavon et al. 2017)."""

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        ones = torch.ones_like(h)
        w1 = torch.ones_like(module.weight.detach())

        def f_flat(t: Tensor) -> Tensor:
            return _apply_linear(module, t, w1, None)

        with torch.no_grad():
            z = f_flat(ones)
        s, _ = _safe_ratio(r_out, z, 0.0)
        (c,) = _vjp(f_flat, [ones], s)
        return c


class ZBox(Rule):
    """The z^B rule for inputs bounded by ``low <= x <= high`` (broadcastable to ``h``; Montavon
    et al. 2017 §5): ``R_i = sum_j (x_i w_ji - l_i w_ji^+ - h_i w_ji^-) R_j / z_j`` with ``z_j``
    the sum over ``i`` of the numerator; every term is >= 0 inside the box."""

    def __init__(self, low: Any = None, high: Any = None) -> None:
        self.low, self.high = low, high

    def bounds(self, h: Tensor) -> tuple[Any, Any]:
        return self.low, self.high

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        low, high = self.bounds(h)
        lo = torch.as_tensor(low, dtype=h.dtype, device=h.device).expand_as(h)
        hi = torch.as_tensor(high, dtype=h.dtype, device=h.device).expand_as(h)
        w = module.weight.detach()
        w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)

        def f_box(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
            return (_apply_linear(module, a, w, None) - _apply_linear(module, b, w_pos, None)
                    - _apply_linear(module, c, w_neg, None))

        with torch.no_grad():
            z = f_box(h, lo, hi)
        s, zero = _safe_ratio(r_out, z, 0.0)
        ca, cb, cc = _vjp(f_box, [h, lo, hi], s)
        return _with_flat_fallback(module, h, r_out, h * ca + lo * cb + hi * cc, zero)


class PixelBox(ZBox):
    """:class:`ZBox` with the box of the normalised pixel range: ``(0 - mean) / std`` to
    ``(1 - mean) / std`` per channel (one value or one per channel)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = mean, std

    def bounds(self, h: Tensor) -> tuple[Tensor, Tensor]:
        c = h.shape[1]
        mean = torch.tensor(self.mean, dtype=h.dtype, device=h.device)
        std = torch.tensor(self.std, dtype=h.dtype, device=h.device)
        if mean.numel() == 1:
            mean = mean.expand(c)
        if std.numel() == 1:
            std = std.expand(c)
        if mean.numel() != c or std.numel() != c:
            raise ValueError(f"input_mean / input_std have {mean.numel()} / {std.numel()} values "
                             f"for an input with {c} channels")
        shape = (1, c) + (1,) * (h.ndim - 2)
        return ((0 - mean) / std).view(shape), ((1 - mean) / std).view(shape)


# --------------------------------------------------------------------------- pooling


def pool_relevance(module: nn.Module, h: Tensor, r_out: Tensor, stabilizer: float = 0.0) -> Tensor:
    """Relevance at the input of a pooling layer viewed as a linear map (Otsuki et al. 2024 §3.1).

    Average pooling has positive weights, so z+ = z; max pooling is the linear map that picks
    the arg-max of each window, so relevance goes to the winner. Outputs with ``z == 0`` and
    nonzero relevance pass it on as the plain vector-Jacobian product of the pooling
    divided by ``pool(1)`` (to the window's arg-max, or evenly over an average window).
    """
    with torch.enable_grad():
        leaf = h.detach().requires_grad_(True)
        z = module(leaf)
        s, zero = _safe_ratio(r_out, z.detach(), stabilizer)
        (c,) = torch.autograd.grad(z, leaf, s, retain_graph=True)
        r_in = h * c
        lost = None if zero is None else zero & (r_out != 0)
        if lost is not None and bool(lost.any()):
            norm = module(torch.ones_like(h[:1]))
            (c_flat,) = torch.autograd.grad(z, leaf, torch.where(lost, r_out / norm, torch.zeros_like(r_out)))
            r_in = r_in + c_flat
    return r_in


class Pool(Rule):
    """A pooling layer as a linear map (Otsuki et al. 2024 §3.1): average pooling has positive
    weights (z+ = z), max pooling picks the arg-max of each window (relevance to the winner);
    ``stabilizer`` as zennit's ``Norm`` rule on average pooling (0 for max pooling)."""

    def __init__(self, stabilizer: float = 0.0) -> None:
        self.stabilizer = stabilizer

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        return pool_relevance(module, h, r_out, self.stabilizer)


class Avg2Pool(Rule):
    """A max pooling propagated as ``AvgPool2d(kernel_size=2)`` (stride 2, no padding), as the
    official code of Otsuki et al. 2024 does for every ``MaxPool2d``. On a torchvision ResNet
    (max pool 3x3, stride 2, padding 1) of an even-sized map the two give the same output size."""

    def relevance(self, module: nn.Module, h: Tensor, r_out: Tensor, z_forward: Tensor | None = None) -> Tensor:
        if not isinstance(module, nn.MaxPool2d):
            raise ValueError(f"maxpool='avg2' replaces nn.MaxPool2d only, got {type(module).__name__}")
        pool = nn.AvgPool2d(kernel_size=2)
        if pool(h[:1]).shape[1:] != r_out.shape[1:]:
            raise UnsupportedPooling(
                f"maxpool='avg2': a 2x2 average pool of the input {tuple(h.shape[1:])} does not give "
                f"the max pool's output shape {tuple(r_out.shape[1:])} (use maxpool='wta')")
        return pool_relevance(pool, h, r_out, 0.0)


class UnsupportedPooling(NotImplementedError):
    """A pooling rule cannot stand in for this layer (the engine reports the layer's name)."""
