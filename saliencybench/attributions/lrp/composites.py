"""Composites: which rule each layer gets (zennit's idea of composites).

A :class:`Composite` maps a linear layer (by type and by its position relative to the
residual blocks) to a :class:`~saliencybench.attributions.lrp.rules.Rule`, with its own rules
for the layer that sees the image and for pooling, and the canonizer-like steps that go with
it (BatchNorm folding, the residual split). :func:`composite_for` builds the named
composites of the registered methods from the fields of ``LRPConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from torch import nn

from saliencybench.attributions.lrp.canonizers import (
    SPLIT_MODES,
    SPLITS,
    MergeBatchNorm,
    RatioSplit,
    ResidualSplit,
    SignedSplit,
)
from saliencybench.attributions.lrp.rules import (
    Alpha1Beta0,
    Avg2Pool,
    Epsilon,
    Flat,
    PixelBox,
    Pool,
    Rule,
    WPlus,
    ZPlus,
)


class Layer(Protocol):
    """What a composite sees of a traced layer: its module and ``stage`` (the 1-based number of
    the residual block it is in, ``k + 0.5`` after the k-th block)."""

    module: nn.Module | None
    stage: float


INPUT_RULES = ("zplus", "ones", "zbox", "flat")
MAXPOOL_MODES = ("wta", "avg2")

#: ``selector(layer, n_blocks) -> bool``: whether a composite entry applies to a layer
Selector = Callable[[Layer, int], bool]


def of_type(*types: type[nn.Module]) -> Selector:
    """Layers whose module is one of ``types`` (zennit's type-mapped composites)."""

    def select(layer: Layer, n_blocks: int) -> bool:
        return isinstance(layer.module, types)

    return select


def after_block(k: int) -> Selector:
    """Layers after the ``k``-th residual block; on a network without blocks, its fully
    connected layers (Otsuki et al. 2024 supp. Table C, the rule mixture)."""

    def select(layer: Layer, n_blocks: int) -> bool:
        if n_blocks == 0:
            return isinstance(layer.module, nn.Linear)
        return layer.stage > k

    return select


@dataclass(frozen=True)
class Composite:
    """Rules of one LRP variant.

    Attributes:
        layers: ``(selector, rule)`` pairs, the first match wins; else ``default``.
        default: the rule of every other convolution / linear layer.
        first: the rule of the layer that sees the image (None: the layer's own rule).
        pool: the rule of average pooling; ``max_pool`` that of max pooling.
        bn: the BatchNorm fold (None: BatchNorm passes relevance unchanged).
        split: the relevance split at residual merges.

    Example: z+ everywhere, epsilon on the fully connected layers, w+ at the image:
    ``Composite(default=ZPlus(), layers=((of_type(nn.Linear), Epsilon()),), first=WPlus())``.
    """

    default: Rule
    layers: tuple[tuple[Selector, Rule], ...] = ()
    first: Rule | None = None
    pool: Rule = Pool()
    max_pool: Rule = Pool()
    bn: MergeBatchNorm | None = None
    split: ResidualSplit = ResidualSplit(RatioSplit())

    def rule_for(self, layer: Layer, n_blocks: int) -> Rule:
        for select, rule in self.layers:
            if select(layer, n_blocks):
                return rule
        return self.default

    def pool_rule(self, module: nn.Module) -> Rule:
        # max pooling's z-rule is exact (relevance to the arg-max, as zennit's plain gradient);
        # average pooling is stabilised like zennit's Norm rule.
        return self.max_pool if "Max" in type(module).__name__ else self.pool

    def folds_bn(self, bn: nn.Module | None, rule: Rule) -> bool:
        return self.bn is not None and self.bn.applies(bn, rule)


@dataclass(frozen=True)
class LRPConfig:
    """Parameters of one LRP variant (see :func:`~saliencybench.attributions.lrp.engine.lrp_relevance`)."""

    rule: str = "zplus"
    split: str = "ratio"
    include_identity: bool = True
    init: str = "prob"
    epsilon: float = 1e-6
    stabilizer: float = 0.0
    zplus_mode: str = "paper"
    switch_block: int = 8
    # rules see conv + eval-mode BN as one folded conv (zennit's MergeBatchNorm): True for every
    # rule, "epsilon" only where the epsilon rule applies (whose denominator must include BN's
    # shift), False: BN passes relevance unchanged (Otsuki et al. 2024 §3.1)
    canonize_bn: bool | str = False
    # the first linear layer's rule (rules.WPlus / Flat / PixelBox): zplus on the signed image,
    # ones (Otsuki et al. 2024 official code), zbox (bounds of the normalised pixel range [0, 1], from
    # input_mean / input_std), flat
    input_rule: str = "zplus"
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    # max pooling in the relevance pass: wta (z rule of the max pool: relevance to the
    # arg-max) or avg2 (a 2x2 average pool, stride 2, in its place: Otsuki et al. 2024 official code)
    maxpool: str = "wta"

    def __post_init__(self) -> None:
        if self.input_rule not in INPUT_RULES:
            raise ValueError(f"unknown input_rule '{self.input_rule}' ({', '.join(INPUT_RULES)})")
        if self.maxpool not in MAXPOOL_MODES:
            raise ValueError(f"unknown maxpool '{self.maxpool}' ({', '.join(MAXPOOL_MODES)})")
        for k in ("input_mean", "input_std"):
            v = getattr(self, k)
            if v is not None:
                v = (float(v),) if isinstance(v, (int, float)) else tuple(float(t) for t in v)
                object.__setattr__(self, k, v)
        if self.input_rule == "zbox" and (self.input_mean is None or self.input_std is None):
            raise ValueError("input_rule='zbox' needs input_mean and input_std (the normalisation "
                             "of the model input; the box is (0 - mean) / std .. (1 - mean) / std)")
        if self.input_std is not None and any(v <= 0 for v in self.input_std):
            raise ValueError(f"input_std must be positive, got {self.input_std}")
        if self.rule not in ("zplus", "epsilon", "mixture"):
            raise ValueError(f"unknown LRP rule '{self.rule}' (zplus, epsilon or mixture)")
        if self.split not in SPLIT_MODES:
            raise ValueError(f"unknown relevance split '{self.split}' ({', '.join(SPLIT_MODES)})")
        if self.init not in ("prob", "logit"):
            raise ValueError(f"unknown initial relevance '{self.init}' (prob or logit)")
        if self.canonize_bn not in (True, False, "epsilon"):
            raise ValueError(f"canonize_bn must be true, false or 'epsilon', got {self.canonize_bn!r}")
        if self.zplus_mode not in ("paper", "alpha1beta0"):
            raise ValueError(f"unknown zplus_mode '{self.zplus_mode}' (paper or alpha1beta0)")


def _first_rule(cfg: LRPConfig) -> Rule | None:
    """The rule of the layer that sees the image (``LRPConfig.input_rule``)."""
    if cfg.input_rule == "zplus":
        return None
    if cfg.input_rule == "zbox":
        return PixelBox(cfg.input_mean, cfg.input_std)
    return {"ones": WPlus, "flat": Flat}[cfg.input_rule]()


def composite_for(cfg: LRPConfig) -> Composite:
    """The composite of an ``LRPConfig``: ``rule`` zplus / epsilon / mixture (epsilon after the
    ``switch_block``-th block, z+ before: Otsuki et al. 2024 supp. Table C), ``zplus_mode``
    paper (:class:`ZPlus`) or alpha1beta0, ``canonize_bn``, ``split``, ``include_identity``,
    ``input_rule`` and ``maxpool``."""
    zplus_cls = Alpha1Beta0 if cfg.zplus_mode == "alpha1beta0" else ZPlus
    zplus, eps = zplus_cls(cfg.stabilizer), Epsilon(cfg.epsilon)
    default = eps if cfg.rule == "epsilon" else zplus
    layers = ((after_block(cfg.switch_block), eps),) if cfg.rule == "mixture" else ()
    bn = {True: MergeBatchNorm(), "epsilon": MergeBatchNorm((Epsilon,)), False: None}[cfg.canonize_bn]
    split = SignedSplit(cfg.epsilon) if cfg.split == "signed" else SPLITS[cfg.split]()
    return Composite(
        default=default, layers=layers, first=_first_rule(cfg),
        pool=Pool(cfg.epsilon if cfg.rule == "epsilon" else cfg.stabilizer),
        max_pool=Avg2Pool() if cfg.maxpool == "avg2" else Pool(0.0),
        bn=bn, split=ResidualSplit(split, cfg.include_identity),
    )
