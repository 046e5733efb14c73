"""Registered LRP methods: the LRP rule family and LRP for ResNet (Otsuki et al. 2024, ECCV).

All entries share one implementation, :func:`lrp`, and differ only in registry defaults
(and post-processing), so a suite can re-parametrise any of them. The defaults are the fields
of :class:`~saliencybench.attributions.lrp.composites.LRPConfig`, from which
:func:`~saliencybench.attributions.lrp.composites.composite_for` builds the rules
(:mod:`~saliencybench.attributions.lrp.rules`) and canonizer-like steps
(:mod:`~saliencybench.attributions.lrp.canonizers`) that the engine
(:mod:`~saliencybench.attributions.lrp.engine`) applies.

| registry name | rule | merge | identity skips | HQ | Otsuki et al. 2024 |
|---|---|---|---|---|---|
| ``lrp_resnet`` | z+ | ratio (Eq. 5) | yes | Q=8 | Table 2 (iv), Table 3 (ii), Table C "Ours (z+)" |
| ``lrp_resnet_noquant`` | z+ | ratio | yes | no | Table 3 (i) (w/o HQ) on the (iv) design |
| ``lrp_resnet_ratio_noidentity`` | z+ | ratio | no | Q=8 | Table 2 (iii) |
| ``lrp_resnet_symmetric`` | z+ | symmetric (Eq. 4) | yes | Q=8 | Table 2 (ii) |
| ``lrp_resnet_symmetric_noidentity`` | z+ | symmetric | no | Q=8 | Table 2 (i) |
| ``lrp_resnet_mixture`` | eps after block 8, z+ before | ratio | yes | Q=8 | Table C "Ours (Mixture)" |
| ``lrp_epsilon`` | epsilon | signed sum rule | yes | no | Table 1 / C "LRP (eps rule)" |
| ``lrp_zplus`` / ``lrp_alpha1beta0`` | z+ = alpha1beta0 | signed sum rule | yes | no | |
| ``lrp_mixture`` | eps after block 8, alpha1beta0 before | signed sum rule | yes | no | Table C "LRP (Mixture)" |

The ``lrp_resnet*`` entries start from the softmax probability of the target (Otsuki et al. 2024 §4.1); the
plain LRP rules start from the target logit as in Bach et al. 2015 and zennit/Captum.
The "signed" merge of the plain rules is the standard LRP sum rule (zennit's ``Norm`` on the
``Sum`` its ResNet canonizer inserts), and they fold each eval-mode BatchNorm into the conv
before it (``canonize_bn``, zennit's ``MergeBatchNorm``): without the fold the epsilon rule
divides by the pre-BN conv output and its relevance explodes on BN networks. ``lrp_resnet*``
keep the paper's rule, BatchNorm passes relevance unchanged (Otsuki et al. 2024 §3.1).

First layer and max pooling of ``lrp_resnet*`` (parameters ``input_rule`` and ``maxpool``,
:mod:`~saliencybench.attributions.lrp.rules`): z+ on the signed, normalised
image (``input_rule="zplus"``) has denominators that cross zero, so a few pixels get huge
relevance of either sign. The official code of Otsuki et al. 2024 replaces the image by ones
for that step (``ones``) and relevance-propagates max pooling through a 2x2 average pool
(``maxpool="avg2"``). The registry default is ``input_rule="ones"`` with ``maxpool="wta"``
(relevance to the max pool's arg-max), chosen by the comparison on the default zoo in the
README; the paper suites set ``maxpool="avg2"`` as the official code does. ``zbox`` (z^B with
the box of the normalised pixel range, needs ``input_mean`` / ``input_std``) and ``flat`` are
the other choices. The plain LRP rules keep z+ / epsilon on the image and the arg-max pooling
(zennit's defaults, which they are cross-checked against). Heat Quantization is
the shared ``quantize:8`` post-processing step
(:func:`saliencybench.attributions.postprocess.heat_quantize`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from saliencybench.attributions.lrp.composites import LRPConfig
from saliencybench.attributions.lrp.engine import lrp_relevance
from saliencybench.core.errors import NotApplicableError
from saliencybench.core.registry import register_method

PAPER = "Otsuki et al. 2024 (ECCV), LRP with Conservation Property for ResNet"


def lrp(model: nn.Module, x: Tensor, target: Tensor, **params: Any) -> Tensor:
    """LRP relevance at the input (B,C,H,W); params are the fields of ``LRPConfig``.

    Registered as the baselines of Otsuki et al. 2024 (Table 1, supp. Table C): ``lrp_epsilon``
    (Bach et al. 2015, ``rule="epsilon"``), ``lrp_zplus`` / ``lrp_alpha1beta0`` (Montavon et
    al. 2017, ``rule="zplus"``) and ``lrp_mixture`` (``rule="mixture"``, ``switch_block=8``:
    epsilon after ResNet50's 8th block, Otsuki et al. 2024 supp. Table C). Defaults, shared by the four:
    the standard (zennit-style) LRP of those baselines, not the method of Otsuki et al. 2024: ``canonize_bn=True``
    (BN folded into the conv before it), ``split="signed"`` and ``include_identity=True``
    (the plain sum rule at residual merges), ``init="logit"`` (relevance starts at the
    target logit), ``epsilon=1e-06`` and ``stabilizer=1e-06`` (zennit's default stabiliser),
    ``zplus_mode="alpha1beta0"`` (positive weights and inputs, no bias: zennit's ZPlus)."""
    return lrp_relevance(model, x, target, config=LRPConfig(**params)).relevance


def has_residual_blocks(model: nn.Module) -> bool:
    """True when the model has ResNet blocks (torchvision BasicBlock / Bottleneck or look-alikes)."""
    return any(all(hasattr(m, a) for a in ("conv1", "bn1", "conv2", "bn2")) for m in model.modules())


def lrp_for_resnet(model: nn.Module, x: Tensor, target: Tensor, **params: Any) -> Tensor:
    """LRP for ResNet (Otsuki et al. 2024); not applicable to networks without residual blocks, where every
    splitting variant reduces to the same plain z+ pass (use lrp_zplus there).

    Defaults, from Otsuki et al. 2024 (§3, Eq. 4-8) and its code
    (github:keio-smilab24/LRP-for-ResNet): ``rule="zplus"``, ``split="ratio"`` (Eq. 5),
    ``include_identity=True`` (splitting at identity skips too, Table 2 (iv)),
    ``init="prob"`` (relevance starts at the target's softmax probability),
    ``stabilizer=0.0`` and ``zplus_mode="paper"`` (the authors' z+); the first layer
    ``input_rule="ones"`` (the official code's z+ step on a tensor of ones; ``"zplus"``,
    ``"zbox"`` with ``input_mean=None`` / ``input_std=None``, which it needs set to the dataset's
    normalisation, and ``"flat"`` are the options) and ``maxpool="wta"`` (the max pool's own
    rule; ``"avg2"`` is the official code's 2x2 average pool), chosen from the measured
    comparison in the README; the ``otsuki2024-*`` suites set ``maxpool="avg2"``. Variants (Table 2, supp.
    Table C): ``lrp_resnet_ratio_noidentity`` ``include_identity=False``;
    ``lrp_resnet_symmetric`` ``split="symmetric"`` (Eq. 4); ``lrp_resnet_symmetric_noidentity``
    ``split="symmetric"``, ``include_identity=False``; ``lrp_resnet_mixture``
    ``rule="mixture"`` with ``epsilon=1e-06`` and ``canonize_bn="epsilon"`` (BN folded where
    the epsilon rule applies)."""
    if not has_residual_blocks(model):
        raise NotApplicableError("LRP for ResNet needs residual blocks; the model has none (use lrp_zplus)")
    return lrp(model, x, target, **params)


def lrp_resnet_with_checkpoints(
    model: nn.Module, x: Tensor, target: Tensor, **params: Any
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Raw attribution (B,1,H,W channel sum, no quantization), relevance sums at the Otsuki et al. 2024 §5.5
    checkpoints ``{"input", "first_block", "last_block"}`` (each (B,), float64; NaN without
    residual blocks) and the initial relevance (B,) (``p(y_c)`` for ``init="prob"``)."""
    res = lrp_relevance(model, x, target, config=LRPConfig(**params))
    return res.relevance.sum(1, keepdim=True), res.checkpoints, res.initial


_RESNET = dict(rule="zplus", split="ratio", include_identity=True, init="prob",
               stabilizer=0.0, zplus_mode="paper", input_rule="ones", maxpool="wta",
               input_mean=None, input_std=None)
_BASELINE = dict(canonize_bn=True, split="signed", include_identity=True, init="logit",
                 epsilon=1e-6, stabilizer=1e-6, zplus_mode="alpha1beta0")

_VARIANTS: list[tuple[str, dict[str, Any], tuple[str, ...], str]] = [
    ("lrp_resnet", {}, ("sum", "quantize:8"),
     "LRP for ResNet, full method: z+ rule, ratio-based Relevance Splitting (Eq. 5) at every "
     "merge incl. identity skips, Heat Quantization Q=8. Otsuki et al. 2024 Table 2 (iv) = Table 3 (ii)."),
    ("lrp_resnet_noquant", {}, ("sum",),
     "LRP for ResNet without Heat Quantization (raw channel sum), otherwise as lrp_resnet. "
     "Otsuki et al. 2024 Table 3 (i) 'w/o HQ'."),
    ("lrp_resnet_ratio_noidentity", {"include_identity": False}, ("sum", "quantize:8"),
     "LRP for ResNet, ratio splitting only at projection skips, R_s = 0 on identity skips, HQ. "
     "Otsuki et al. 2024 Table 2 (iii)."),
    ("lrp_resnet_symmetric", {"split": "symmetric"}, ("sum", "quantize:8"),
     "LRP for ResNet, symmetric splitting (Eq. 4) at every merge incl. identity skips, HQ. "
     "Otsuki et al. 2024 Table 2 (ii)."),
    ("lrp_resnet_symmetric_noidentity", {"split": "symmetric", "include_identity": False},
     ("sum", "quantize:8"),
     "LRP for ResNet, symmetric splitting only at projection skips, R_s = 0 on identity "
     "skips, HQ. Otsuki et al. 2024 Table 2 (i)."),
    ("lrp_resnet_mixture", {"rule": "mixture", "epsilon": 1e-6, "canonize_bn": "epsilon"},
     ("sum", "quantize:8"),
     "LRP for ResNet (ratio split, HQ) with the rule mixture: epsilon after the 8th block "
     "(on conv + BN folded), z+ before. Otsuki et al. 2024 supp. Table C 'Ours (Mixture of rules)'."),
]

for _name, _over, _post, _desc in _VARIANTS:
    register_method(
        _name, family="lrp", paper=PAPER, defaults={**_RESNET, **_over},
        postprocess=_post, conservation="lrp", description=_desc,
    )(lrp_for_resnet)

register_method(
    "lrp_epsilon", family="lrp", paper="Bach et al. 2015; Otsuki et al. 2024 Table 1 'LRP'",
    defaults={**_BASELINE, "rule": "epsilon"}, postprocess=("sum",), conservation="lrp",
    description="LRP epsilon rule (eps=1e-6, bias in the denominator) on every conv / linear "
    "layer (BN folded into it), standard sum rule at residual merges. Otsuki et al. 2024 Table 1 / Table C "
    "'LRP (eps rule)'.",
)(lrp)
for _name in ("lrp_zplus", "lrp_alpha1beta0"):
    register_method(
        _name, family="lrp", paper="Bach et al. 2015; Montavon et al. 2017",
        defaults={**_BASELINE, "rule": "zplus"}, postprocess=("sum",), conservation="lrp",
        description="LRP z+ = alpha1beta0 rule (positive contributions, no bias) on every conv / "
        "linear layer (BN folded into it), standard sum rule at residual merges (zennit ZPlus, "
        "zero bias).",
    )(lrp)
register_method(
    "lrp_mixture", family="lrp", paper="Otsuki et al. 2024 supp. Table C 'LRP (Mixture of rules)'",
    defaults={**_BASELINE, "rule": "mixture", "switch_block": 8},
    postprocess=("sum",), conservation="lrp",
    description="LRP rule mixture: epsilon after the 8th residual block, alpha1beta0 before "
    "(models without blocks: epsilon on linear layers). Otsuki et al. 2024 supp. Table C.",
)(lrp)
