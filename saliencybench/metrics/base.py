"""Base class of every metric.

A metric is constructed with its parameters (registry defaults overridden by the suite) and
evaluated on a batch of cached attributions. Metrics that can share forward passes (the
perturbation curves) return the same :meth:`group_key` and are evaluated together by
:meth:`evaluate_group`, so the runner never pays twice for the same perturbed image.
"""

from __future__ import annotations

from typing import Any, Hashable

import torch
from torch import Tensor

from saliencybench.core.types import EvalContext, MetricOutput


class Metric:
    """Subclass and register with ``@register_metric(name, higher_is_better=...)``.

    Class attributes:
        needs_method: the metric calls ``ctx.attribute`` again (MIA, conservation).
        needs_mask: the metric needs ground-truth object masks: on a batch without masks,
            :meth:`evaluate_group` gives every sample NaN and the status ``no_mask`` without
            calling :meth:`evaluate`.
        plot_curve: False when ``MetricOutput.curve`` is not a series to draw as a curve.

    Figures and tables after a run are the report layer's (``saliencybench.benchmark.report``).
    """

    name: str = ""
    plot_curve: bool = True  # False when MetricOutput.curve is not a series to draw as a curve
    needs_method: bool = False
    needs_mask: bool = False

    def __init__(self, name: str | None = None, **params: Any) -> None:
        if name is not None:
            self.name = name
        self.params = params

    # -- applicability --------------------------------------------------------------------
    def applies_to(self, method_meta: dict[str, Any]) -> bool:
        """False when the metric has nothing to say about this method (no row is written)."""
        return True

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        """Score one batch. ``attribution`` is (B,1,H,W) on ``ctx.device``."""
        raise NotImplementedError

    def group_key(self) -> Hashable | None:
        """Metrics of the same class with equal keys are evaluated in one call."""
        return None

    @classmethod
    def evaluate_group(
        cls, metrics: "list[Metric]", ctx: EvalContext, attribution: Tensor
    ) -> dict[str, MetricOutput]:
        """Every metric of the group on one batch (:meth:`evaluate`, or a ``no_mask`` output
        for a metric that :attr:`needs_mask` on a batch without masks)."""
        return {m.name: m.evaluate_or_no_mask(ctx, attribution) for m in metrics}

    def evaluate_or_no_mask(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        """:meth:`evaluate`, unless the metric needs masks and the batch has none."""
        if self.needs_mask and ctx.batch.mask is None:
            return no_mask_output(ctx.batch.x.shape[0], attribution.device)
        return self.evaluate(ctx, attribution)

    def manifest(self) -> dict[str, Any]:
        """Parameters recorded in run.json."""
        return {"class": type(self).__name__, **self.params}

    @classmethod
    def direction(cls, params: dict[str, Any]) -> bool | None:
        """``higher_is_better`` of a metric with these parameters when they decide it, else None
        (the registry's). The runner records the result in run.json, where the leaderboard
        reads it."""
        return None

    # -- what a metric measures (for aggregates that must not count one measurement twice) ---
    @classmethod
    def measurement_key(cls, record: dict[str, Any]) -> Hashable | None:
        """Key of what a metric with manifest ``record`` measures, or None (unique).

        Two metrics of a run whose keys are equal (and not None) give the same value for every
        sample by construction, e.g. LeRF and Insertion on one substrate; the leaderboard
        counts them once. ``record`` is the metric's entry in run.json (:meth:`manifest`).
        """
        return None

    @classmethod
    def components(cls, record: dict[str, Any]) -> tuple[Hashable, ...]:
        """Measurement keys this metric is a function of (empty: a primary measurement).

        E.g. the ID score (Insertion - Deletion) returns the keys of the Insertion and Deletion
        it is computed from; where a run measures all of them, the derived metric adds no
        measurement of its own.
        """
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, params={self.params!r})"


def no_mask_output(b: int, device: torch.device | str = "cpu") -> MetricOutput:
    """NaN values (float32) with the status ``no_mask`` for a batch of ``b`` samples without masks."""
    return MetricOutput(values=torch.full((b,), float("nan"), device=device),
                        status=["no_mask"] * b)
