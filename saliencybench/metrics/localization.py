"""Localization metrics: grid localization (GridPG / DiFull / DiPart), relevance mass in a
ground-truth mask, and the pointing game. Their report (box plots, AggAtt, Spearman, smoothing
sweep) is :mod:`saliencybench.benchmark.report.localization`.

- ``localization`` (Rao, Böhle & Schiele 2022, supp. Eq. 2 and §H.3): positive attribution
  inside the scored grid cell divided by the total positive attribution; 0 when the total is
  at most 1e-7. Maps arrive bilinearly upsampled to the input size (layer attributions
  included); the mask is the scored cell. Random (uniform) attribution scores 1/n^2.
- ``mass_in_mask``: the same ratio on a ground-truth object mask (relevance mass accuracy,
  Arras et al. 2022, on the positive part of the map as Eq. 2 does).
- ``pointing_game`` (Zhang et al. 2018): 1 if the maximum of the map lies inside the mask.
  Rule for ties: when several pixels share the maximum, the score is the fraction of them
  inside the mask (so a constant map scores the mask's area fraction, not 1). Masks may be
  dilated by ``tolerance`` pixels (Zhang et al. use 15 px at 224). Empty masks give NaN
  with status ``empty_mask``; samples without masks give status ``no_mask``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from saliencybench.core.registry import register_metric
from saliencybench.core.tensors import as_map_batch, single_channel_map
from saliencybench.core.types import EvalContext, MetricOutput
from saliencybench.metrics.base import Metric

EPS_TOTAL = 1e-7


# -- pure scoring functions ----------------------------------------------------------------

def _fit(attribution: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(B,1,H,W) map at the mask's size and (B,1,H,W) mask in the map's dtype."""
    mask = as_map_batch(mask)
    a = single_channel_map(attribution, mask.shape[-2:])
    return a, mask.to(a.device, a.dtype)


def localization_parts(attribution: Tensor, mask: Tensor, eps: float = EPS_TOTAL) -> tuple[Tensor, Tensor, Tensor]:
    """(score, inside, total) per sample: Rao et al. 2022 supp. Eq. 2.

    ``inside`` = sum of positive attribution in the mask, ``total`` = sum of positive
    attribution; score = inside / total, or 0 where total <= ``eps`` (supp. §H.3). Maps of
    another size are bilinearly resized to the mask first.
    """
    a, m = _fit(attribution, mask)
    pos = a.clamp(min=0).double()
    inside = (pos * (m > 0.5)).flatten(1).sum(1)
    total = pos.flatten(1).sum(1)
    score = torch.where(total > eps, inside / total.clamp(min=eps), torch.zeros_like(total))
    return score.float(), inside.float(), total.float()


def localization_score(attribution: Tensor, mask: Tensor, eps: float = EPS_TOTAL) -> Tensor:
    """(B,) grid localization score (see :func:`localization_parts`)."""
    return localization_parts(attribution, mask, eps)[0]


def pointing_game_score(attribution: Tensor, mask: Tensor, *, tolerance: int = 0,
                        tie_eps: float = 0.0) -> tuple[Tensor, list[str]]:
    """(B,) pointing-game hits with the tie rule of the module docstring, and statuses."""
    a, m = _fit(attribution, mask)
    m = (m > 0.5).to(a.dtype)
    if tolerance > 0:
        m = F.max_pool2d(m, 2 * tolerance + 1, stride=1, padding=tolerance)
    flat = a.flatten(1)
    top = flat.max(1, keepdim=True).values
    is_max = (flat >= top - tie_eps).to(a.dtype)
    hits = (is_max * m.flatten(1)).sum(1) / is_max.sum(1).clamp(min=1)
    empty = m.flatten(1).sum(1) == 0
    status = ["empty_mask" if e else "ok" for e in empty.tolist()]
    hits = torch.where(empty, torch.full_like(hits, float("nan")), hits)
    return hits.float(), status



# -- registered metrics (a batch without masks gets ``no_mask`` from Metric.evaluate_group) ---

class _PositiveMass(Metric):
    """Share of the positive attribution inside the batch's masks (Rao et al. 2022 supp. Eq. 2)."""

    needs_mask = True

    def _parts(self, ctx: EvalContext, attribution: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return localization_parts(attribution, ctx.batch.mask, float(self.params.get("eps", EPS_TOTAL)))


@register_metric("localization", higher_is_better=True, paper="Rao, Böhle & Schiele 2022 (GridPG / DiFull / DiPart)",
                 description="positive attribution in the scored grid cell / total positive attribution")
class Localization(_PositiveMass):
    """Grid localization score (Rao et al. 2022 supp. Eq. 2); 0 when the total is <= 1e-7."""

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        score, inside, total = self._parts(ctx, attribution)
        return MetricOutput(values=score, extra={"inside": inside, "total": total})


@register_metric("mass_in_mask", higher_is_better=True, paper="Arras et al. 2022 (relevance mass accuracy)",
                 description="positive attribution inside the object mask / total positive attribution")
class MassInMask(_PositiveMass):
    """Relevance mass accuracy on ground-truth object masks (positive part); NaN and the status
    ``empty_mask`` for an empty mask."""

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        score, inside, total = self._parts(ctx, attribution)
        empty = (ctx.batch.mask.flatten(1) > 0.5).sum(1) == 0
        status = ["empty_mask" if e else "ok" for e in empty.tolist()]
        score = torch.where(empty.to(score.device), torch.full_like(score, float("nan")), score)
        return MetricOutput(values=score, status=status, extra={"inside": inside, "total": total})


@register_metric("pointing_game", higher_is_better=True, paper="Zhang et al. 2018 (pointing game)",
                 defaults={"tolerance": 0},
                 description="1 if the map's maximum lies in the mask (ties: fraction of maxima inside)")
class PointingGame(Metric):
    """Pointing game on ground-truth masks; ties scored by the fraction of maxima inside."""

    needs_mask = True

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        hits, status = pointing_game_score(attribution, ctx.batch.mask, tolerance=int(self.params.get("tolerance", 0)),
                                           tie_eps=float(self.params.get("tie_eps", 0.0)))
        return MetricOutput(values=hits, status=status)
