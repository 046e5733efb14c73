"""Canonizer-like steps: what LRP does around the layers the rules see (zennit's idea of
canonizers, which rewrite a model into a form the rules apply to).

- :class:`MergeBatchNorm`: a rule sees conv + eval-mode BatchNorm as one folded conv
  (zennit's ``MergeBatchNorm``); otherwise BatchNorm passes relevance unchanged (Otsuki et al.
  2024 §3.1). NIB's BatchNorm without mean and shift (Lee & Chang, "Attribution Mask", §4.1)
  and dropout pass relevance unchanged too (:data:`PASS_TYPES`).
- Relevance splits at a residual merge ``h_skip + h_main`` (Otsuki et al. 2024 §4.3-4.4):
  :class:`RatioSplit` (Eq. 5-7), :class:`SymmetricSplit` (Eq. 4), :class:`SignedSplit` (the
  standard LRP sum rule, zennit's ``Norm`` on the ``Sum`` its ResNet canonizer inserts), and
  :class:`ResidualSplit`, which applies one of them at every block, optionally with no
  relevance through identity skips (§4.4, Table 2 "Include identical").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saliencybench.attributions.lrp.rules import Rule, WeightCache, _stabilize
from saliencybench.models.nib import NIBBatchNorm2d

#: layers that pass relevance unchanged (BatchNorm without folding, NIB's BatchNorm, dropout)
PASS_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, NIBBatchNorm2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
)


# --------------------------------------------------------------------------- BatchNorm
def foldable_bn(conv: nn.Module, bn: nn.Module) -> bool:
    """An eval-mode-capable ``nn.BatchNorm2d`` with running statistics right after an ``nn.Conv2d``."""
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None)


_FOLDED = WeightCache()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    w = conv.weight * scale.view(-1, 1, 1, 1)
    b = -bn.running_mean * scale
    if conv.bias is not None:
        b = b + conv.bias * scale
    if bn.bias is not None:
        b = b + bn.bias
    return w.detach(), b.detach()


def folded_params(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Conv weight and bias with the eval-mode BN folded in, cached until a tensor changes
    (:class:`~saliencybench.attributions.lrp.rules.WeightCache`)."""
    ts = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    return _FOLDED.get(conv, ts, lambda: _fold(conv, bn), extra=(id(bn), bn.eps))


def folded_proxy(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A stand-in of ``conv`` whose weight and bias include the following eval-mode BN.

    The proxy gets its own parameter dict, so the model itself is never touched.
    """
    w, b = folded_params(conv, bn)
    proxy = type(conv).__new__(type(conv))
    proxy.__dict__ = {**conv.__dict__, "_parameters": {"weight": w, "bias": b}}
    return proxy


class MergeBatchNorm:
    """Rules see conv + the eval-mode BN after it as one folded conv (zennit's ``MergeBatchNorm``).

    ``rule_types``: fold only for layers whose rule is one of these types (``None``: every
    rule), e.g. ``(Epsilon,)``, whose denominator must include BN's shift.
    """

    def __init__(self, rule_types: tuple[type[Rule], ...] | None = None) -> None:
        self.rule_types = rule_types

    def applies(self, bn: nn.Module | None, rule: Rule) -> bool:
        """Whether a layer followed by ``bn`` (None: no foldable BN) and given ``rule`` is folded."""
        wanted = self.rule_types is None or isinstance(rule, self.rule_types)
        return wanted and bn is not None and not bn.training


# --------------------------------------------------------------------------- residual merges
class Split:
    """Relevance of ``h_skip + h_main`` divided into ``(R_skip, R_main)``."""

    def __call__(self, r: Tensor, h_skip: Tensor, h_main: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class RatioSplit(Split):
    """Otsuki et al. 2024 Eq. 5: ``R_s = R |h_s| / (|h_s| + |h_m|)``, ``R_m = R - R_s`` (Eq. 6-7);
    where both are zero the relevance is halved (never NaN, still conservative)."""

    def __call__(self, r: Tensor, h_skip: Tensor, h_main: Tensor) -> tuple[Tensor, Tensor]:
        a_s = h_skip.abs()
        frac = (a_s / (a_s + h_main.abs())).nan_to_num_(nan=0.5)  # both zero somewhere: halve there
        r_s = r * frac
        return r_s, r - r_s


class SymmetricSplit(Split):
    """Otsuki et al. 2024 Eq. 4: ``R_s = R_m = R / 2``."""

    def __call__(self, r: Tensor, h_skip: Tensor, h_main: Tensor) -> tuple[Tensor, Tensor]:
        half = r * 0.5
        return half, r - half


class SignedSplit(Split):
    """The standard LRP sum rule (zennit's ``Norm`` on its ``Sum`` layer):
    ``R_s = h_s R / (h_s + h_m + eps sign)``; not conservative where the sum is small."""

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = epsilon

    def __call__(self, r: Tensor, h_skip: Tensor, h_main: Tensor) -> tuple[Tensor, Tensor]:
        s = r / _stabilize(h_skip + h_main, self.epsilon)
        return h_skip * s, h_main * s


class ResidualSplit:
    """The ResNet relevance split of every residual block: ``split`` at each merge; with
    ``include_identity=False`` identity skips get no relevance, ``R_s = 0`` (Otsuki et al. 2024
    §4.4, Table 2), projection skips still split."""

    def __init__(self, split: Split, include_identity: bool = True) -> None:
        self.split, self.include_identity = split, include_identity

    def __call__(self, r: Tensor, h_skip: Tensor, h_main: Tensor, identity: bool) -> tuple[Tensor, Tensor]:
        if identity and not self.include_identity:
            return torch.zeros_like(r), r
        return self.split(r, h_skip, h_main)


SPLITS: dict[str, type[Split]] = {"ratio": RatioSplit, "symmetric": SymmetricSplit, "signed": SignedSplit}
SPLIT_MODES = tuple(SPLITS)
