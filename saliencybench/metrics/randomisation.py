"""Model-parameter randomisation sanity checks (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim
2018, NeurIPS, "Sanity Checks for Saliency Maps", Sec. 3).

An attribution that explains the model must change when the model's weights are destroyed. The
layers of a *deep copy* of the model are re-initialised

- ``cascading`` (Sec. 3.1, Fig. 2): from the top (logits) down, cumulatively, one more layer at
  every step;
- ``independent`` (Sec. 3.1, Fig. 4): one layer at a time, the others keeping their weights;

and the method explains the same inputs and targets on every randomised copy. The similarity of
the original map and the randomised one per step is a curve over layers (``MetricOutput.curve``,
abscissa 1..L in randomisation order) and its mean over the layers the sample's value (lower is
better: the method depends more on the model). Similarities (Sec. 3, "Similarity metrics"):

- ``spearman``: Spearman rank correlation of the absolute maps (average ranks for ties, as
  ``scipy.stats.spearmanr``); a constant map on one side gives 0, on both sides 1;
- ``ssim``: SSIM (Wang et al. 2004, Eq. 13) of the absolute maps each divided by its maximum, with
  scikit-image's defaults (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, mean over
  the windows inside the image) and data range max - min over both maps, as Quantus computes it.

Layers are the modules that have ``reset_parameters`` (convolutions, linear and normalisation
layers), in ``named_modules`` order, re-initialised by their own ``reset_parameters`` after
``torch.manual_seed(seed + 1)`` -- Quantus's ``get_random_layer_generator`` convention, so the
randomised weights equal Quantus's MPRT -- inside ``torch.random.fork_rng``, so the global random
state is not consumed. The original model is never modified (the model guard checks it).

The metric needs ``ctx.attribute(x, target, model=...)``: the method under evaluation, called on
another model with the suite's parameters.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.core.guard import model_guard
from saliencybench.core.registry import register_metric
from saliencybench.core.types import EvalContext, MetricOutput
from saliencybench.metrics.base import Metric

MODES = ("cascading", "independent")
SIMILARITIES = ("spearman", "ssim")


def randomisable_layers(model: nn.Module) -> list[str]:
    """Names of the modules with ``reset_parameters``, in ``named_modules`` order (bottom-up)."""
    return [n for n, m in model.named_modules() if hasattr(m, "reset_parameters")]


def _reset(module: nn.Module, seed: int) -> None:
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 1)
        module.reset_parameters()


def randomised_models(model: nn.Module, layers: Sequence[str], *, mode: str = "cascading",
                      seed: int = 42) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer, copy)``: a deep copy of ``model`` with ``layer`` re-initialised (Adebayo et
    al. 2018, Sec. 3.1). ``cascading`` goes from the last of ``layers`` to the first and keeps the
    layers randomised before (one copy, modified step by step: use it before the next step);
    ``independent`` randomises one layer of a fresh copy at a time. ``model`` is only read."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    order = list(reversed(layers)) if mode == "cascading" else list(layers)
    work = copy.deepcopy(model) if mode == "cascading" else None
    for name in order:
        current = work if work is not None else copy.deepcopy(model)
        _reset(current.get_submodule(name), seed)
        yield name, current


def _average_ranks(v: Tensor) -> Tensor:
    """Ranks 1..N along dim 1, ties sharing their average rank (``scipy.stats.rankdata``)."""
    b, n = v.shape
    s, idx = v.sort(dim=1, stable=True)
    first = torch.ones_like(s, dtype=torch.bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    group = first.long().cumsum(1) - 1
    pos = torch.arange(1, n + 1, dtype=torch.float64, device=v.device).expand(b, n)
    total = torch.zeros(b, n, dtype=torch.float64, device=v.device).scatter_add_(1, group, pos)
    count = torch.zeros(b, n, dtype=torch.float64, device=v.device).scatter_add_(1, group, torch.ones_like(pos))
    ranked = (total / count.clamp_min(1)).gather(1, group)
    return torch.empty_like(ranked).scatter_(1, idx, ranked)


def spearman_abs(a: Tensor, b: Tensor) -> Tensor:
    """(B,) Spearman rank correlation of |a| and |b| per sample (maps (B,...)), batched.

    A sample whose two maps are both constant gets 1 (identical rankings), one constant map 0."""
    ra = _average_ranks(a.detach().flatten(1).abs().double())
    rb = _average_ranks(b.detach().flatten(1).abs().double())
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    na, nb = ra.square().sum(1), rb.square().sum(1)
    den = (na * nb).sqrt()
    rho = torch.where(den > 0, (ra * rb).sum(1) / torch.where(den > 0, den, torch.ones_like(den)),
                      torch.zeros_like(den))
    return torch.where((na == 0) & (nb == 0), torch.ones_like(rho), rho)


def ssim(a: Tensor, b: Tensor, *, data_range: Tensor | float, win_size: int = 7) -> Tensor:
    """(B,) mean SSIM (Wang et al. 2004, Eq. 13) of single-channel maps (B,1,H,W), batched, with
    scikit-image's ``structural_similarity`` defaults (uniform window, K1 0.01, K2 0.03, sample
    covariance, mean over the windows that lie inside the image)."""
    a, b = a.detach().double(), b.detach().double()
    r = torch.as_tensor(data_range, dtype=torch.float64, device=a.device).reshape(-1, 1, 1, 1)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    cov_norm = win_size**2 / (win_size**2 - 1)

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win_size, stride=1)

    ua, ub = mean(a), mean(b)
    va = cov_norm * (mean(a * a) - ua * ua)
    vb = cov_norm * (mean(b * b) - ub * ub)
    vab = cov_norm * (mean(a * b) - ua * ub)
    s = (2 * ua * ub + c1) * (2 * vab + c2) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return s.mean((1, 2, 3))


def ssim_abs(a: Tensor, b: Tensor) -> Tensor:
    """SSIM of |a| and |b| (B,1,H,W), each divided by its maximum (Quantus's ``normalise_by_max``)
    and compared over the data range max - min of both (1 where both maps are constant)."""
    a, b = a.detach().abs().double(), b.detach().abs().double()
    a = a / a.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1, 1)
    b = b / b.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1, 1)
    both = torch.cat([a.flatten(1), b.flatten(1)], 1)
    span = both.amax(1) - both.amin(1)
    return ssim(a, b, data_range=torch.where(span > 0, span, torch.ones_like(span)))


SIMILARITY_FUNCTIONS = {"spearman": spearman_abs, "ssim": ssim_abs}


def _accepts_model(attribute: Any) -> bool:
    try:
        params = inspect.signature(attribute).parameters
    except (TypeError, ValueError):
        return False
    return "model" in params


class ModelRandomisation(Metric):
    """Similarity of the maps of the model and of its layer-randomised copies (Adebayo et al. 2018,
    Sec. 3.1); registered as ``randomisation_cascading`` and ``randomisation_independent``."""

    needs_method = True
    default_mode = "cascading"
    plot_curve = False  # similarity per layer: its own figure, not a perturbation curve

    def __init__(self, name: str | None = None, **params: Any) -> None:
        super().__init__(name=name, **params)
        unknown = set(params) - {"mode", "similarity", "seed", "layers"}
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {sorted(unknown)}")
        self.mode = params.get("mode", self.default_mode)
        self.similarity = params.get("similarity", "spearman")
        self.seed = int(params.get("seed", 42))
        self.layers = None if params.get("layers") is None else [str(n) for n in params["layers"]]
        if self.mode not in MODES:
            raise ValueError(f"{self.name}: mode must be one of {MODES}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"{self.name}: similarity must be one of {SIMILARITIES}")

    def curve(self, ctx: EvalContext, attribution: Tensor) -> tuple[list[str], Tensor]:
        """Layer names in randomisation order and the (B, L) similarity per sample and layer."""
        if ctx.attribute is None or not _accepts_model(ctx.attribute):
            raise RuntimeError(f"{self.name} needs ctx.attribute(x, target, model=...) to explain the "
                               "randomised copies of the model")
        layers = self.layers if self.layers is not None else randomisable_layers(ctx.model)
        similar = SIMILARITY_FUNCTIONS[self.similarity]
        x, target = ctx.batch.x, ctx.target
        names, columns = [], []
        with model_guard(ctx.model, who=self.name):
            for name, randomised in randomised_models(ctx.model, layers, mode=self.mode, seed=self.seed):
                maps = ctx.attribute(x, target, model=randomised).to(attribution.device).reshape(attribution.shape)
                finite = torch.isfinite(maps).flatten(1).all(1) & torch.isfinite(attribution).flatten(1).all(1)
                sim = similar(torch.nan_to_num(attribution), torch.nan_to_num(maps))
                names.append(name)
                columns.append(torch.where(finite, sim, torch.full_like(sim, float("nan"))))
        if not columns:
            return names, torch.zeros(x.shape[0], 0, dtype=torch.float64, device=attribution.device)
        return names, torch.stack(columns, 1)

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        names, sims = self.curve(ctx, attribution)
        finite = torch.isfinite(sims).all(1) & (sims.shape[1] > 0)
        values = torch.where(finite, sims.mean(1), torch.full_like(sims.sum(1), float("nan")))
        status = ["ok" if ok else "nonfinite_attribution" for ok in finite.tolist()]
        return MetricOutput(values=values, curve=sims.float(),
                            curve_x=torch.arange(1, len(names) + 1, dtype=torch.float32),
                            status=status, extra={"layers": names})


def _register(mode: str, figure: str, what: str) -> type[ModelRandomisation]:
    """Register the metric ``randomisation_<mode>``: a subclass whose default mode is ``mode``."""
    doc = f"{what.capitalize()} model-parameter randomisation (Adebayo et al. 2018, Sec. 3.1, {figure})."
    cls = type(f"{mode.capitalize()}Randomisation", (ModelRandomisation,),
               {"default_mode": mode, "__doc__": doc, "__module__": __name__})
    return register_metric(
        f"randomisation_{mode}", higher_is_better=False, paper=f"Adebayo et al. 2018, Sec. 3.1, {figure}",
        defaults={"mode": mode, "similarity": "spearman", "seed": 42, "layers": None},
        description=f"Model randomisation, {what}: mean similarity of maps over layers (curve per layer)",
    )(cls)


CascadingRandomisation = _register("cascading", "Fig. 2", "cascading from the top")
IndependentRandomisation = _register("independent", "Fig. 4", "one layer at a time")

__all__ = [
    "CascadingRandomisation", "IndependentRandomisation", "ModelRandomisation", "randomisable_layers",
    "randomised_models", "spearman_abs", "ssim", "ssim_abs",
]
