"""Masked input accuracy (MIA), Lee & Chang ("Attribution Mask"), Algorithm 1 and Eq. 11-12.

For i = 1..I, the method under evaluation explains the *masked* input for the target class,

    A_i = Expl(f, z_0 * m*_{i-1}, k),     m_i = MinMax(A_i),     m*_i = m*_{i-1} * m_i,

with m*_0 = 1 and MinMax taken per sample and per channel (Eq. 11: "we conduct normalization
for each channel"); the mask multiplies the *normalised* input. The accuracy at iteration i is
1[argmax f(z_0 * m*_i) = t] (Eq. 12, t the ground-truth label), i = 0..I; the per-sample curve
of 0/1 correctness over iterations is stored, and the mean over samples of the curve is the MIA
Q_i of the paper's tables.

Conventions:

- The method is called again at every iteration through ``ctx.attribute(x, target,
  reduce=False)`` (the registry and model guard of the method): the *signed* attribution per
  channel, for every method (Lee & Chang Alg. 1 and Eq. 11 min-max normalise A itself; the official
  code applies no absolute value). Channel reductions and absolute values of the method's
  post-processing are skipped, so Guided Backprop or Saliency give their signed gradients here,
  not |GBP|; other steps (smoothing, quantisation) are kept. A method whose output has one
  channel gives one mask for all channels.
- A channel whose attribution is constant (max = min) gets mask 0, as in the official code
  (its min-max normalisation ``(A - min) / (max - min)`` has a zero numerator everywhere).
- A non-finite attribution at any iteration gives the sample the status
  ``nonfinite_attribution`` and a NaN value; its mask is frozen from then on.
- ``target``: "label" (Algorithm 1, the default) or "predicted" (the class predicted on the
  unmasked input); accuracy is always measured against the label (Eq. 12).
- ``value``: "last" (default: correctness at iteration I, whose mean is Q_I), "mean" (mean over
  iterations 1..I) or "max" (max over 1..I).

Forward passes: B per iteration for the accuracy (B (I+1) in all, counted under the metric's
name); the attribution calls are the method's own cost.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saliencybench.core.registry import register_metric
from saliencybench.core.tensors import as_map_batch, fast_layout
from saliencybench.core.types import EvalContext, MetricOutput
from saliencybench.metrics.base import Metric


def minmax_per_channel(a: Tensor) -> Tensor:
    """Lee & Chang Eq. 11 per sample and channel: (A - min) / (max - min) of the signed
    attribution; a constant channel gives 0 (the official code's value, whose numerator is 0)."""
    lo = a.amin(dim=(2, 3), keepdim=True)
    hi = a.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (a - lo) / safe, torch.zeros_like(a))


@register_metric(
    "mia", higher_is_better=True, paper="Lee & Chang (Attribution Mask), Algorithm 1, Eq. 11-12",
    defaults={"iterations": 10, "target": "label", "value": "last"},
    description="Masked input accuracy: accuracy after iterating attribution masks (curve over iterations)",
)
class MaskedInputAccuracy(Metric):
    """Masked input accuracy (Lee & Chang, Algorithm 1, Eq. 11-12)."""

    needs_method = True

    def __init__(self, name: str | None = None, **params: Any) -> None:
        super().__init__(name=name, **params)
        self.iterations = int(params.get("iterations", 10))
        self.target = params.get("target", "label")
        self.value = params.get("value", "last")
        unknown = set(params) - {"iterations", "target", "value"}
        if unknown:
            raise ValueError(f"mia: unknown parameter(s) {sorted(unknown)}")
        if self.iterations < 0:
            raise ValueError("mia: iterations must be >= 0")
        if self.target not in ("label", "predicted"):
            raise ValueError("mia: target must be 'label' or 'predicted'")
        if self.value not in ("last", "mean", "max"):
            raise ValueError("mia: value must be 'last', 'mean' or 'max'")

    @torch.no_grad()
    def _predict(self, ctx: EvalContext, x: Tensor) -> Tensor:
        outs = [ctx.model(fast_layout(x[i:i + ctx.max_batch])) for i in range(0, x.shape[0], max(1, ctx.max_batch))]
        ctx.count_forwards(self.name, x.shape[0])
        return torch.cat(outs).argmax(1)

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        if ctx.attribute is None:
            raise RuntimeError("mia needs ctx.attribute to call the method again at every iteration")
        x = ctx.batch.x
        labels = ctx.batch.y.to(x.device).long()
        b = x.shape[0]
        pred0 = self._predict(ctx, x)
        target = labels if self.target == "label" else pred0
        correct = torch.zeros(b, self.iterations + 1, device=x.device)
        correct[:, 0] = (pred0 == labels).float()
        mask = torch.ones_like(x)
        alive = torch.ones(b, dtype=torch.bool, device=x.device)
        for i in range(1, self.iterations + 1):
            a = as_map_batch(ctx.attribute(x * mask, target, reduce=False).to(x.device).float())
            a = a.expand_as(x) if a.shape[1] == 1 else a
            finite = torch.isfinite(a).flatten(1).all(1)
            alive &= finite
            m = minmax_per_channel(torch.where(torch.isfinite(a), a, torch.zeros_like(a)))
            m = torch.where(alive.view(-1, 1, 1, 1), m, torch.ones_like(m))
            mask = mask * m
            correct[:, i] = (self._predict(ctx, x * mask) == labels).float()
        status = ["ok" if ok else "nonfinite_attribution" for ok in alive.tolist()]
        if self.iterations == 0 or self.value == "last":
            values = correct[:, -1]
        elif self.value == "mean":
            values = correct[:, 1:].mean(1)
        else:
            values = correct[:, 1:].amax(1)
        values = torch.where(alive, values, torch.full_like(values, float("nan"))).double()
        curve = torch.where(alive.view(-1, 1), correct, torch.full_like(correct, float("nan")))
        return MetricOutput(values=values, curve=curve,
                            curve_x=torch.arange(self.iterations + 1, dtype=torch.float32),
                            status=status)
