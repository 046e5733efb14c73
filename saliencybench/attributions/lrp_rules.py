"""Single-layer LRP propagation rules and Relevance Splitting.

Notation of Otsuki et al. 2024 (paper 001, §3.1): a layer maps ``h^(l)`` to ``h^(l+1)``;
``R^(l+1)`` is the relevance of its output and the rules below return ``R^(l)``.
Every rule is implemented with the "gradient trick" of 001 Eq. 3: with ``f'`` the modified
linear map, ``R^(l) = h * (J_f'(h)^T (R^(l+1) / f'(h)))``, where the transposed Jacobian
product is one vector-Jacobian product of a convolution / linear / pooling layer. The whole
batch goes through one call, so a batch costs one transposed convolution per layer.

Rules (``LayerRule.kind``):

- ``zplus``: 001 Eq. 2-3, ``z_j = sum_i w_ji^+ h_i`` (no bias). With ``signed_inputs=True``
  the positive contributions of negative inputs are kept too,
  ``z_j = sum_i w_ji^+ h_i^+ + w_ji^- h_i^-`` (alpha1beta0 of Bach et al. 2015, zennit's
  ``ZPlus(zero_params='bias')``); both coincide whenever ``h >= 0``, i.e. after any ReLU.
- ``epsilon``: Bach et al. 2015, ``z_j = sum_i w_ji h_i + b_j`` stabilised by
  ``eps * sign(z_j)`` (sign(0) = +1, as zennit's ``Epsilon``); relevance absorbed by the
  bias and the stabiliser is lost, so it is not conservative.

Stabiliser of the conservative rules: where ``z_j == 0`` exactly and ``R_j != 0`` (possible
after BatchNorm shifts, or with symmetric splitting), 001 leaves the rule undefined; we then
give ``R_j`` to the inputs in proportion to ``|w_ji|`` (a flat rule), which keeps
``sum_i R_i = sum_j R_j`` exact and never produces NaN. Everywhere else the division is
unmodified (``stabilizer=0``) so conservation holds to float precision.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

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
SPLIT_MODES = ("ratio", "symmetric", "signed")


@dataclass(frozen=True)
class LayerRule:
    """How one linear layer propagates relevance.

    Attributes:
        kind: ``zplus`` or ``epsilon``.
        stabilizer: added as ``stabilizer * sign(z)`` to the denominator; 0 keeps the rule
            exact (zeros are handled by the flat fallback described in the module doc).
        signed_inputs: z+ on signed inputs as alpha1beta0 (see module doc).
    """

    kind: str = "zplus"
    stabilizer: float = 0.0
    signed_inputs: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("zplus", "epsilon"):
            raise ValueError(f"unknown LRP rule '{self.kind}' (zplus or epsilon)")


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


_WPOS: dict[int, tuple[Any, tuple, Tensor]] = {}


def positive_weight(weight: Tensor) -> Tensor:
    """``max(0, W)`` (001 Eq. 2), cached per parameter until it changes (version, storage).

    The cache entry dies with the parameter (weakref finalizer), so models are not kept alive.
    """
    key = (weight._version, weight.data_ptr(), weight.dtype, weight.device, tuple(weight.shape))
    hit = _WPOS.get(id(weight))
    if hit is not None and hit[0]() is weight and hit[1] == key:
        return hit[2]
    w_pos = weight.detach().clamp(min=0)
    if hit is None or hit[0]() is not weight:
        weakref.finalize(weight, _WPOS.pop, id(weight), None)
    _WPOS[id(weight)] = (weakref.ref(weight), key, w_pos)
    return w_pos


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


def linear_relevance(module: nn.Module, h: Tensor, r_out: Tensor, rule: LayerRule,
                     z_forward: Tensor | None = None) -> Tensor:
    """Relevance at the input of a convolution or linear layer (001 Eq. 1-3).

    Args:
        module: ``nn.Conv{1,2,3}d`` or ``nn.Linear``.
        h: the layer input recorded in the forward pass.
        r_out: relevance of the layer output (same shape as the output).
        rule: the propagation rule.
        z_forward: the layer's forward output ``W h + b`` (reused by the epsilon rule).
    """
    w = module.weight.detach()
    if rule.kind == "epsilon":
        b = None if module.bias is None else module.bias.detach()
        z = z_forward if z_forward is not None else _apply_linear(module, h, w, b)
        if rule.stabilizer > 0:
            s = r_out / _stabilize(z, rule.stabilizer)
        else:
            s, _ = _safe_ratio(r_out, z, 0.0)
        (c,) = _vjp(lambda t: _apply_linear(module, t, w, None), [h], s)
        return h * c

    w_pos = positive_weight(module.weight)
    if rule.signed_inputs and bool((h < 0).any()):
        w_neg = w.clamp(max=0)
        h_pos, h_neg = h.clamp(min=0), h.clamp(max=0)

        def f_pair(a: Tensor, b: Tensor) -> Tensor:
            return _apply_linear(module, a, w_pos, None) + _apply_linear(module, b, w_neg, None)

        with torch.no_grad():
            z = f_pair(h_pos, h_neg)
        s, zero = _safe_ratio(r_out, z, rule.stabilizer)
        c_pos, c_neg = _vjp(f_pair, [h_pos, h_neg], s)
        r_in = h_pos * c_pos + h_neg * c_neg
    else:
        def f_plus(t: Tensor) -> Tensor:
            return _apply_linear(module, t, w_pos, None)

        with torch.enable_grad():
            leaf = h.detach().requires_grad_(True)
            z = f_plus(leaf)
            s, zero = _safe_ratio(r_out, z.detach(), rule.stabilizer)
            (c,) = torch.autograd.grad(z, leaf, s)
        r_in = h * c
    extra = _flat_fallback(lambda t: _apply_linear(module, t, w.abs(), None), h, r_out, zero)
    return r_in if extra is None else r_in + extra


def pool_relevance(module: nn.Module, h: Tensor, r_out: Tensor, stabilizer: float = 0.0) -> Tensor:
    """Relevance at the input of a pooling layer viewed as a linear map (001 §3.1).

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


def split_relevance(r: Tensor, h_skip: Tensor, h_main: Tensor, mode: str = "ratio",
                    epsilon: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Relevance Splitting at a residual merge ``h_skip + h_main`` (001 §4.3).

    Modes:
        ``ratio``: 001 Eq. 5, ``R_s = R |h_s| / (|h_s| + |h_m|)``, ``R_m = R - R_s`` (Eq. 6-7);
            where both are zero the relevance is halved (never NaN, still conservative).
        ``symmetric``: 001 Eq. 4, ``R_s = R_m = R / 2``.
        ``signed``: the standard LRP sum rule (zennit's ``Norm`` on its ``Sum`` layer),
            ``R_s = h_s R / (h_s + h_m + eps sign)``; not conservative where the sum is small.

    Returns:
        ``(R_skip, R_main)``.
    """
    if mode == "ratio":
        a_s = h_skip.abs()
        frac = a_s / (a_s + h_main.abs())
        if not bool(torch.isfinite(frac.sum())):  # both zero somewhere: halve there
            frac = torch.nan_to_num(frac, nan=0.5)
        r_s = r * frac
        return r_s, r - r_s
    if mode == "symmetric":
        half = r * 0.5
        return half, r - half
    if mode == "signed":
        s = r / _stabilize(h_skip + h_main, epsilon)
        return h_skip * s, h_main * s
    raise ValueError(f"unknown relevance split '{mode}' (one of {', '.join(SPLIT_MODES)})")


INPUT_RULES = ("zplus", "ones", "zbox", "flat")


def input_relevance(module: nn.Module, h: Tensor, r_out: Tensor, kind: str,
                    low: Tensor | None = None, high: Tensor | None = None) -> Tensor:
    """Relevance at the image for the first linear layer (the one that sees the pixels).

    The z+ rule (001 Eq. 2) assumes non-negative inputs; a normalised image is signed, so
    ``z_j = sum_i w_ji^+ x_i`` can cross zero and the ratios spike. Rules for this layer
    (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep Taylor
    decomposition", §4-5; the official code of Otsuki et al. 2024 uses ``ones``):

    - ``zplus``: z+ on the image as it is (``linear_relevance`` with the z+ rule).
    - ``ones``: z+ with the image replaced by a tensor of ones (zero padding stays zero):
      ``R_i = sum_j w_ji^+ R_j / sum_i' w_ji'^+`` (the w+ rule; 001 official code).
    - ``flat``: every weight and input 1, ``R_i = sum_j R_j / n_j`` with ``n_j`` the number
      of (non-padding) inputs of output ``j``.
    - ``zbox``: the z^B rule for inputs bounded by ``low <= x <= high`` (broadcastable to
      ``h``), ``R_i = sum_j (x_i w_ji - l_i w_ji^+ - h_i w_ji^-) R_j / z_j`` with ``z_j`` the
      sum over ``i`` of the numerator; every term is >= 0 inside the box.

    The bias is ignored by all of them. Outputs whose denominator is exactly 0 pass their
    relevance on in proportion to ``|w|`` (module doc), so every rule conserves relevance.
    """
    if kind == "zplus":
        return linear_relevance(module, h, r_out, LayerRule("zplus"))
    if kind == "ones":
        return linear_relevance(module, torch.ones_like(h), r_out, LayerRule("zplus"))
    w = module.weight.detach()
    if kind == "flat":
        ones = torch.ones_like(h)
        w1 = torch.ones_like(w)

        def f_flat(t: Tensor) -> Tensor:
            return _apply_linear(module, t, w1, None)

        with torch.no_grad():
            z = f_flat(ones)
        s, _ = _safe_ratio(r_out, z, 0.0)
        (c,) = _vjp(f_flat, [ones], s)
        return c
    if kind == "zbox":
        if low is None or high is None:
            raise ValueError("the zbox input rule needs the input bounds low and high")
        lo = torch.as_tensor(low, dtype=h.dtype, device=h.device).expand_as(h)
        hi = torch.as_tensor(high, dtype=h.dtype, device=h.device).expand_as(h)
        w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)

        def f_box(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
            return (_apply_linear(module, a, w, None) - _apply_linear(module, b, w_pos, None)
                    - _apply_linear(module, c, w_neg, None))

        with torch.no_grad():
            z = f_box(h, lo, hi)
        s, zero = _safe_ratio(r_out, z, 0.0)
        ca, cb, cc = _vjp(f_box, [h, lo, hi], s)
        r_in = h * ca + lo * cb + hi * cc
        extra = _flat_fallback(lambda t: _apply_linear(module, t, w.abs(), None), h, r_out, zero)
        return r_in if extra is None else r_in + extra
    raise ValueError(f"unknown input rule '{kind}' (one of {', '.join(INPUT_RULES)})")


MAXPOOL_MODES = ("wta", "avg2")


def avg2_pool(module: nn.Module) -> nn.Module:
    """The pooling that replaces a max pooling in the relevance pass with ``maxpool="avg2"``:
    ``AvgPool2d(kernel_size=2)`` (stride 2, no padding), as the official code of Otsuki et
    al. 2024 does for every ``MaxPool2d``. On a torchvision ResNet (max pool 3x3, stride 2,
    padding 1) of an even-sized map the two give the same output size."""
    if not isinstance(module, nn.MaxPool2d):
        raise ValueError(f"maxpool='avg2' replaces nn.MaxPool2d only, got {type(module).__name__}")
    return nn.AvgPool2d(kernel_size=2)
