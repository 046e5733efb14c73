"""Every Quantus metric, by name, through the metric registry: ``quantus:<ClassName>``.

Quantus (Hedström et al., JMLR 2023) is an optional dependency (``pip install
saliency-bench[quantus]``; it is also in the ``test`` extra). Importing it takes seconds, so the
names are registered from the static table below (name -> direction, category, what the metric
needs) without importing it; Quantus is imported when such a metric is *constructed*. A test
checks the table against the installed Quantus.

How a Quantus metric is fed:

- ``model``: the benchmark's model (eval mode, logits out); Quantus wraps it itself and applies
  its own softmax where the metric asks for one (``softmax`` call argument);
- ``x_batch``: the normalised batch, ``y_batch``: ``ctx.target`` (the class the attribution
  explains), ``a_batch``: the cached (B,1,H,W) attribution, ``s_batch``: the object masks when the
  dataset has them (localisation metrics need them);
- ``explain_func``: metrics that re-explain (robustness, randomisation, input invariance) get a
  function that calls the method under evaluation again through the registry: ``ctx.attribute``
  on the benchmark's model, or :func:`compute_attribution` with the method's registry defaults
  on the randomised copies Quantus builds (suite overrides of an aliased method are not applied
  to those copies).

Outputs. A per-sample scalar becomes the value; a per-sample curve (PixelFlipping,
RegionPerturbation, Selectivity, ...) is stored as the curve and its value is the normalised
uniform trapezoid area (sum - y_0/2 - y_T/2)/T (``curve_engine.uniform_auc``); a batch-level dict (ROAD returns
{percentage: accuracy} for the whole batch) becomes the same curve for every sample, with value
its mean, and ``extra["batch_level"] = True``.

Parameters: constructor keyword arguments of the Quantus class go as metric parameters;
``call_kwargs`` (a dict) goes to the Quantus ``__call__``. ``disable_warnings=True`` and
``display_progressbar=False`` are set unless given. :meth:`QuantusMetric.manifest` records the
Quantus version and the defaults of the class (constructor and call), so a run says exactly
what Quantus did.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saliencybench.core.registry import METHODS, register_metric
from saliencybench.core.types import EvalContext, MetricOutput
from saliencybench.metrics.base import Metric
from saliencybench.metrics.curve_engine import uniform_auc

INSTALL_HINT = "pip install 'saliency-bench[quantus]'"

# name: (higher_is_better, category) -- from Quantus 0.6 ``score_direction`` / ``evaluation_category``
QUANTUS_METRICS: dict[str, tuple[bool, str]] = {
    "AUC": (True, "Localisation"),
    "AttributionLocalisation": (True, "Localisation"),
    "AvgSensitivity": (False, "Robustness"),
    "BatchSufficiency": (True, "Faithfulness"),
    "Completeness": (True, "Axiomatic"),
    "Complexity": (False, "Complexity"),
    "Consistency": (False, "Robustness"),
    "Continuity": (False, "Robustness"),
    "EffectiveComplexity": (False, "Complexity"),
    "EfficientMPRT": (True, "Randomisation"),
    "FaithfulnessCorrelation": (True, "Faithfulness"),
    "FaithfulnessEstimate": (True, "Faithfulness"),
    "Focus": (True, "Localisation"),
    "IROF": (True, "Faithfulness"),
    "Infidelity": (False, "Faithfulness"),
    "InputInvariance": (True, "Axiomatic"),
    "LocalLipschitzEstimate": (False, "Robustness"),
    "MPRT": (False, "Randomisation"),
    "MaxSensitivity": (False, "Robustness"),
    "ModelParameterRandomisation": (False, "Randomisation"),
    "Monotonicity": (True, "Faithfulness"),
    "MonotonicityCorrelation": (True, "Faithfulness"),
    "NonSensitivity": (False, "Axiomatic"),
    "PixelFlipping": (False, "Faithfulness"),
    "PointingGame": (True, "Localisation"),
    "ROAD": (False, "Faithfulness"),
    "RandomLogit": (False, "Randomisation"),
    "RegionPerturbation": (True, "Faithfulness"),  # for its default order="morf"; see ORDER_DIRECTION
    "RelativeInputStability": (False, "Robustness"),
    "RelativeOutputStability": (False, "Robustness"),
    "RelativeRepresentationStability": (False, "Robustness"),
    "RelevanceMassAccuracy": (True, "Localisation"),
    "RelevanceRankAccuracy": (True, "Localisation"),
    "Selectivity": (False, "Faithfulness"),
    "SensitivityN": (True, "Faithfulness"),
    "SmoothMPRT": (False, "Randomisation"),
    "Sparseness": (True, "Complexity"),
    "Sufficiency": (True, "Faithfulness"),
    "TopKIntersection": (True, "Localisation"),
}
NEEDS_METHOD = {"Robustness", "Randomisation"} | {"InputInvariance"}

#: Metrics whose direction follows their ``order`` parameter, where the table above disagrees
#: with Quantus 0.6's class-level ``score_direction``. RegionPerturbation (Samek et al. 2017,
#: §III, AOPC) returns per step the *drop* f(x) - f(x_perturbed) of the class score; Quantus
#: declares ``ScoreDirection.LOWER`` for every order, but removing the most relevant regions
#: first (``order="morf"``, its default) should make the score fall fast, so a larger drop,
#: i.e. a larger area, is better, while for ``order="lerf"`` the least relevant regions go first
#: and a smaller drop is better. ``order="random"`` ignores the attribution: the table's value.
ORDER_DIRECTION: dict[str, dict[str, bool]] = {
    "RegionPerturbation": {"morf": True, "lerf": False},
}


def import_quantus() -> Any:
    """Import Quantus or raise an ImportError that says how to install it."""
    try:
        quantus = importlib.import_module("quantus")
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching sys.modules
        raise ImportError(
            f"the quantus:* metrics need the optional dependency Quantus ({e}); "
            f"install it with `{INSTALL_HINT}`"
        ) from e
    if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz, removed in NumPy 2
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    return quantus


def _jsonable(v: Any) -> Any:
    if v is inspect.Parameter.empty:
        return "<required>"
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(i) for i in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(i) for k, i in v.items()}
    return getattr(v, "__qualname__", None) or repr(v)


def quantus_defaults(cls: type) -> dict[str, dict[str, Any]]:
    """Defaults of a Quantus class's constructor and ``__call__`` (for the run manifest)."""
    out = {}
    for what, fn in (("init", cls.__init__), ("call", cls.__call__)):
        sig = inspect.signature(fn)
        out[what] = {
            n: _jsonable(p.default) for n, p in sig.parameters.items()
            if n not in ("self", "kwargs", "args", "model", "x_batch", "y_batch", "a_batch", "s_batch")
        }
    return out


class QuantusMetric(Metric):
    """A Quantus metric used through the registry (subclassed once per Quantus class)."""

    quantus_class: str = ""

    def __init__(self, name: str | None = None, **params: Any) -> None:
        super().__init__(name=name, **params)
        self._quantus = import_quantus()
        cls = getattr(self._quantus, self.quantus_class, None)
        if cls is None:
            raise ImportError(
                f"the installed Quantus {getattr(self._quantus, '__version__', '?')} has no metric "
                f"'{self.quantus_class}'; upgrade with `{INSTALL_HINT}`"
            )
        self._cls = cls
        init = {k: v for k, v in params.items() if k != "call_kwargs"}
        init.setdefault("disable_warnings", True)
        init.setdefault("display_progressbar", False)
        self._call_kwargs = dict(params.get("call_kwargs", {}) or {})
        self._metric = cls(**init)

    @property
    def needs_mask(self) -> bool:  # type: ignore[override]
        return QUANTUS_METRICS.get(self.quantus_class, (True, ""))[1] == "Localisation"

    @property
    def needs_method(self) -> bool:  # type: ignore[override]
        cat = QUANTUS_METRICS.get(self.quantus_class, (True, ""))[1]
        return cat in NEEDS_METHOD or self.quantus_class in NEEDS_METHOD

    @classmethod
    def direction(cls, params: dict[str, Any]) -> bool | None:
        """Direction from the ``order`` parameter for the metrics in :data:`ORDER_DIRECTION`
        (RegionPerturbation: morf -> higher is better, lerf -> lower is better)."""
        by_order = ORDER_DIRECTION.get(cls.quantus_class)
        if not by_order:
            return None
        return by_order.get(str(params.get("order", "morf")).lower())

    def manifest(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__, "quantus_class": self.quantus_class,
            "quantus_version": getattr(self._quantus, "__version__", "?"),
            **{k: _jsonable(v) for k, v in self.params.items()},
            "quantus_defaults": quantus_defaults(self._cls),
        }

    def _explain_func(self, ctx: EvalContext):
        def explain(model, inputs, targets, **kw) -> np.ndarray:
            x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=ctx.device)
            t = torch.as_tensor(np.asarray(targets), device=ctx.device).long().view(-1)
            if t.numel() == 1 and x.shape[0] > 1:
                t = t.expand(x.shape[0])
            if model is ctx.model and ctx.attribute is not None:
                a = ctx.attribute(x, t)
            else:
                from saliencybench.attributions.base import compute_attribution

                name = ctx.method_meta.get("base", ctx.method) if ctx.method_meta else ctx.method
                if name not in METHODS:
                    raise RuntimeError(f"cannot re-explain with method '{name}': not registered")
                a = compute_attribution(name, model, x, t)
            return a.detach().cpu().numpy()

        return explain

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        b = ctx.batch.x.shape[0]
        x = ctx.batch.x.detach().cpu().numpy()
        y = torch.as_tensor(ctx.target).view(-1).cpu().numpy()
        a = attribution.detach().float().cpu().numpy()
        s = None if ctx.batch.mask is None else ctx.batch.mask.detach().float().cpu().numpy()
        kwargs = dict(model=ctx.model, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True,
                      device=str(ctx.device), explain_func=self._explain_func(ctx))
        kwargs.update(self._call_kwargs)
        res = self._metric(**kwargs)
        ctx.count_forwards(self.name, 0)  # Quantus's own forwards are not visible to us
        return _to_output(res, b)


def _to_output(res: Any, b: int) -> MetricOutput:
    if isinstance(res, dict):  # batch-level curve (ROAD)
        xs = np.array([float(k) for k in res.keys()])
        ys = np.array([float(np.mean(v)) for v in res.values()])
        curve = torch.tensor(np.tile(ys, (b, 1)), dtype=torch.float32)
        values = torch.full((b,), float(ys.mean()), dtype=torch.float64)
        return MetricOutput(values=values, curve=curve, curve_x=torch.tensor(xs, dtype=torch.float32),
                            status=["ok"] * b, extra={"batch_level": True})
    items = list(res) if isinstance(res, (list, tuple, np.ndarray)) else [res] * b
    if len(items) != b:
        raise ValueError(f"Quantus returned {len(items)} scores for a batch of {b}")
    first = np.asarray(items[0], dtype=np.float64)
    if first.ndim == 0:
        vals = np.asarray([float(np.asarray(v, dtype=np.float64)) for v in items])
        return MetricOutput(values=torch.tensor(vals, dtype=torch.float64), status=["ok"] * b)
    curves = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in items])
    t = curves.shape[1]
    auc = uniform_auc(curves)
    return MetricOutput(values=torch.tensor(auc, dtype=torch.float64),
                        curve=torch.tensor(curves, dtype=torch.float32),
                        curve_x=torch.linspace(0, 1, t), status=["ok"] * b)


def _register_all() -> None:
    for cls_name, (higher, category) in QUANTUS_METRICS.items():
        sub = type(f"Quantus{cls_name}", (QuantusMetric,), {
            "quantus_class": cls_name, "__doc__": f"Quantus {cls_name} ({category}) via the adapter.",
            "__module__": __name__,
        })
        register_metric(
            f"quantus:{cls_name}", higher_is_better=higher, paper="Hedström et al. 2023 (Quantus)",
            description=f"Quantus {cls_name} ({category})" + _order_note(cls_name),
        )(sub)


def _order_note(cls_name: str) -> str:
    by_order = ORDER_DIRECTION.get(cls_name)
    if not by_order:
        return ""
    return "; direction follows `order`: " + ", ".join(f"{o} {'↑' if h else '↓'}" for o, h in by_order.items())


_register_all()
