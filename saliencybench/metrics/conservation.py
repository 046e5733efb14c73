"""Conservation error of attribution methods that claim a conservation property.

- LRP methods (registry ``conservation="lrp"``), Otsuki et al. 2024 §5.5 / Fig. 7:
  ``|sum_i R_i^(l) - R_init| / |R_init|`` per sample at three checkpoints: the input, the input
  of the first residual block and the input of the last residual block. ``R_init`` is the
  relevance the method starts from: ``p(y_c)`` (softmax probability of the target) for
  ``init="prob"`` (the lrp_resnet family, Otsuki et al. 2024 §4.1), the target logit for ``init="logit"``.
- Completeness methods (``conservation="completeness"``: integrated_gradients, deeplift):
  ``|sum A - (f(x) - f(x'))| / |f(x) - f(x')|`` with ``f`` the target logit and ``x'`` the
  method's baseline (its ``baseline`` parameter: a number in normalised space, ``"zero"``,
  ``"black"`` (pixel value 0) or a tensor; default zeros).
- Methods without a conservation claim get no row (:meth:`ConservationError.applies_to`).

Output: ``values`` = error at the input. ``curve`` (B,4) at ``curve_x = [0, 1, 2, 3]`` holds the
raw numbers behind the errors, so that the Fig. 7 scatter can be drawn from ``curves.csv``:
step 0 = the initial relevance (p(y_c), the logit, or f(x)-f(x') for completeness methods),
steps 1-3 = the relevance sums at (input, first_block, last_block) (NaN for models without
residual blocks and for completeness methods, with a status). ``extra`` holds
``checkpoints`` {name: (B,) error}, ``relevance_sum`` {name: (B,) sum} and ``probability``
(B,) (= R_init). The Fig. 7 scatter is drawn by :mod:`saliencybench.benchmark.report.conservation`.
The metric recomputes the raw relevance (no Heat Quantization) itself, under ``model_guard``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saliencybench.core.guard import model_guard
from saliencybench.core.registry import METHODS, register_metric
from saliencybench.core.types import EvalContext, MetricOutput
from saliencybench.metrics.base import Metric

CHECKPOINTS = ("input", "first_block", "last_block")


def relative_error(total: Tensor, reference: Tensor) -> Tensor:
    """``|total - reference| / |reference|`` in float64 (inf where the reference is 0)."""
    total, reference = total.double(), reference.double()
    return (total - reference).abs() / reference.abs()


def _baseline(params: dict[str, Any], x: Tensor, ctx: EvalContext) -> Tensor:
    b = params.get("baseline", None)
    if b is None or (isinstance(b, str) and b == "zero"):
        return torch.zeros_like(x)
    if isinstance(b, str) and b == "black":
        return ctx.normalization.pixel_value(0.0, x)
    if isinstance(b, Tensor):
        return b.to(x).expand_as(x)
    if isinstance(b, (int, float)):
        return torch.full_like(x, float(b))
    raise ValueError(f"conservation_error: unsupported baseline {b!r}")


@register_metric(
    "conservation_error", higher_is_better=False,
    paper="Otsuki et al. 2024 §5.5 (LRP); Sundararajan et al. 2017 (completeness)",
    description="relative conservation / completeness error of the raw attribution",
)
class ConservationError(Metric):
    """Relative conservation error (Otsuki et al. 2024 §5.5) or completeness error; lower is better."""

    plot_curve = False  # the curve holds sums, not a series (the report draws the Fig. 7 scatter)
    needs_method = True

    def applies_to(self, method_meta: dict[str, Any]) -> bool:
        return method_meta.get("conservation") in ("lrp", "completeness")

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        kind = ctx.method_meta.get("conservation")
        params = dict(ctx.method_meta.get("params", ctx.method_meta.get("defaults", {})) or {})
        params.pop("postprocess", None)
        if kind not in ("lrp", "completeness"):
            raise ValueError(f"conservation_error does not apply to method '{ctx.method}'")
        # Conservation is a property of the method's arithmetic: it recomputes the attribution
        # and f(x) - f(baseline) in the model's own precision, also under the runner's
        # --autocast (which is meant for the perturbation curves' forwards; LRP in bf16 would
        # both fail and measure bf16 rounding instead of the rule).
        with torch.autocast(device_type=ctx.batch.x.device.type, enabled=False):
            return self._lrp(ctx, params) if kind == "lrp" else self._completeness(ctx, params)

    def _lrp(self, ctx: EvalContext, params: dict[str, Any]) -> MetricOutput:
        from saliencybench.attributions.lrp import lrp_resnet_with_checkpoints

        x, target = ctx.batch.x, ctx.target
        with model_guard(ctx.model, who="metric 'conservation_error'"):
            _, sums, init = lrp_resnet_with_checkpoints(ctx.model, x, target, **params)
        ctx.count_forwards("conservation_error", x.shape[0])
        errs = {k: relative_error(sums[k], init) for k in CHECKPOINTS}
        curve = torch.stack([init.double()] + [sums[k].double() for k in CHECKPOINTS], 1)
        status = None  # without residual blocks only the input checkpoint exists (NaN in the curve)
        return MetricOutput(
            values=errs["input"].float(), curve=curve,
            curve_x=torch.arange(4, dtype=torch.float32), status=status,
            extra={"checkpoints": errs, "relevance_sum": sums, "probability": init.double()},
        )

    def _completeness(self, ctx: EvalContext, params: dict[str, Any]) -> MetricOutput:
        entry = METHODS.get(ctx.method)
        x, target = ctx.batch.x, ctx.target
        base = _baseline(params, x, ctx)
        rows = torch.arange(x.shape[0], device=x.device)
        kw = dict(params)
        if entry.meta.get("stochastic"):
            kw["seeds"] = list(range(x.shape[0]))
        with model_guard(ctx.model, who="metric 'conservation_error'"):
            with torch.enable_grad():
                attr = entry.obj(ctx.model, x.detach(), target, **kw)
            with torch.no_grad():
                f = ctx.model(torch.cat([x, base]))
        ctx.count_forwards("conservation_error", 2 * x.shape[0])
        b = x.shape[0]
        diff = f[:b][rows, target] - f[b:][rows, target]
        total = attr.detach().flatten(1).sum(1, dtype=torch.float64)
        err = relative_error(total, diff)
        nan = torch.full_like(err, float("nan"))
        return MetricOutput(
            values=err.float(), curve=torch.stack([diff.double(), total, nan, nan], 1),
            curve_x=torch.arange(4, dtype=torch.float32),
            extra={"checkpoints": {"input": err}, "relevance_sum": {"input": total},
                   "probability": diff.double()},
        )
