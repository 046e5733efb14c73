"""Perturbation curves: Insertion / Deletion / ID score and LeRF / MoRF pixel flipping.

One engine (:mod:`saliencybench.metrics.curve_engine`) serves all six registered metrics
(``insertion``, ``deletion``, ``id_score``, ``lerf``, ``morf``, ``lerf_morf_gap``), so that the
forward passes they have in common are paid once.

Definitions (N ranking units = pixels, or patches with ``patch_size > 1``; units ranked by
attribution, most relevant first):

- Insertion (Otsuki et al. 2024 supp. Eq. 9-10; Petsiuk et al. 2018): the image is the
  substrate with the top-n units taken from x; score of class c as n grows; AUC, higher is better.
- Deletion (same equations): x with the top-n units replaced by the substrate; lower is better.
- ID score (Otsuki et al. 2024 §5): Insertion AUC - Deletion AUC.
- MoRF / LeRF pixel flipping (Jeon et al. 2022, supp. §G-I; Bach et al. 2015): remove the most /
  least relevant units first; MoRF lower is better, LeRF higher is better.

Sharing of forward passes. Every curve point is one of two image kinds, "keep the top-n units
of x, substrate elsewhere" or "substrate on the top-n units, x elsewhere". With one substrate,
Deletion after n units *is* MoRF after n units, and LeRF after r removed units *is* Insertion
after N-r inserted units. The engine collects the distinct (substrate, kind, n) images requested
by all metrics of a group, renders each once on the device and scores it once; the unperturbed
image and the all-substrate image are recognised as such whatever metric asks for them.
LeRF is therefore sampled on the mirror of the insertion grid (removed fractions 1 - n/N for the
same counts n), which makes its images exactly the insertion images. Forward passes are counted
with ``ctx.count_forwards(metric_name, n)``: each distinct image is attributed to the first
metric of the group that asked for it, so the counts add up to the real total.

Ties. ``ties="random"`` (default outside the ``otsuki2024`` preset) breaks ties between equal
attributions by a random permutation seeded per sample with
``stable_seed(ctx.seed, "perturbation-ties", sample_id)``: results do not depend on the batch a
sample is in, and a constant or all-zero map gives a random order. ``ties="threshold"`` (the
``otsuki2024`` preset) follows the authors' code (``metrics/patch_insdel.py`` of
keio-smilab24/LRP-for-ResNet): at each step a threshold equal to the attribution at the step's
rank is taken and *every* unit at or above it enters (or leaves) together, so a constant map
inserts everything at the first step. ``ties="stable"`` keeps the raster order.

Presets:

- ``otsuki2024`` (Otsuki et al. 2024 and its code): 500 pixels per step, the k-th point thresholds at
  sorted index min(500 k, N-1) (so it has 500 k + 1 pixels, no 0 % point, last point = 100 %),
  threshold ties, black substrate in pixel space (then normalised) for both curves, softmax of
  the ground-truth label, AUC by the trapezoid rule on uniformly spaced points
  ((sum - y_0/2 - y_T/2)/T, as the authors' ``auc``), patches pooled by max.
- ``rise2018`` (Petsiuk et al.): deletion to zero in normalised space, insertion from a blurred
  copy (Gaussian kernel 11, sigma 5, zero padding, in normalised space), 224 pixels per step
  (use ``steps=`` for other sizes), softmax of the predicted class, curve from 0 % to 100 %,
  same uniform trapezoid, random ties.
- ``none``: nothing preset (engine defaults below).

Explicit parameters always override the preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Hashable

import torch
from torch import Tensor

from saliencybench.core.outputs import class_probabilities
from saliencybench.core.registry import register_metric
from saliencybench.core.seeding import stable_seed
from saliencybench.core.tensors import single_channel_map
from saliencybench.core.types import EvalContext, MetricOutput
from saliencybench.metrics.base import Metric
from saliencybench.metrics.curve_engine import (
    CurveEngine,
    CurveSettings,
    ForwardSpec,
    count_grid,
    curve_auc,
    make_substrate,
    pool_units,
    predict_logits,
    ranks_to_pixels,
    unit_ranks,
)

PRESETS: dict[str, dict[str, Any]] = {
    "otsuki2024": dict(
        substrate="black", pixels_per_step=500, steps=None, grid="otsuki", auc="uniform",
        target="label", output="softmax", ties="threshold", patch_size=1, patch_reduce="max",
    ),
    "rise2018": dict(
        insertion_substrate="blur", deletion_substrate="zero", substrate="zero",
        pixels_per_step=224, steps=None, grid="inclusive", auc="uniform", target="predicted",
        output="softmax", ties="random", blur_kernel=11, blur_sigma=5.0, patch_size=1,
    ),
    "none": {},
}


def resolve_settings(params: dict[str, Any]) -> CurveSettings:
    """Preset values, then explicit ``params`` (``preset`` and ``kind`` included)."""
    params = dict(params)
    preset = params.pop("preset", "none") or "none"
    if preset not in PRESETS:
        raise ValueError(f"unknown perturbation preset {preset!r}; choose from {sorted(PRESETS)}")
    known = {f.name for f in fields(CurveSettings)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown perturbation metric parameter(s) {unknown}; known: {sorted(known)}")
    merged = {**PRESETS[preset], **params}
    return CurveSettings(**merged).validate()


# -- one group of curves: shared ranks and images, a plan per metric, outputs ------------------


@dataclass
class _GroupRun:
    """What the curves of one group share: the samples with finite maps, their unit ranks, the
    count grid, the engine and the scored class."""

    settings: CurveSettings  # the group's engine settings (equal engine keys)
    x: Tensor  # (b_ok,C,H,W) samples with a finite map
    rank_px: Tensor
    counts: list[int]
    engine: CurveEngine
    target: Tensor
    reference: Tensor | None  # (1,b_ok) unperturbed scores when a metric needs them
    start: int  # first engine row that is not the unperturbed image scored up front
    noise_seeds: list[int] | None = None  # per-sample seeds of the road substrate's noise

    @property
    def n_units(self) -> int:
        return self.engine.n_units


@dataclass
class _Plan:
    metric: "PerturbationCurve"
    rows: dict[str, list[int]]  # curve name -> engine rows, in abscissa order
    xs: dict[str, Tensor]


def _start_group(ms: "list[PerturbationCurve]", ctx: EvalContext, a: Tensor, ok: Tensor) -> _GroupRun:
    """Rank the units of the finite maps and score the unperturbed images where needed."""
    s0 = ms[0].settings
    x = ctx.batch.x
    h, w = x.shape[-2:]
    xv, av = (x, a) if ok.numel() == x.shape[0] else (x[ok], a[ok])
    seeds = [stable_seed(ctx.seed, "perturbation-ties", ctx.batch.sample_ids[i]) for i in ok.tolist()]
    units = pool_units(av, s0.patch_size, s0.patch_reduce)
    n_units = units.shape[1]
    rank_px = ranks_to_pixels(unit_ranks(units, s0.ties, seeds), (h, w), s0.patch_size)
    counts = count_grid(n_units, s0)
    engine = CurveEngine(n_units)
    labels = ctx.batch.y.to(x.device)[ok].long()
    target, reference = _target_and_reference(ms, ctx, xv, labels, engine)
    noise_seeds = [stable_seed(ctx.seed, "road-noise", ctx.batch.sample_ids[i]) for i in ok.tolist()]
    return _GroupRun(s0, xv, rank_px, counts, engine, target, reference, start=len(engine.keys),
                     noise_seeds=noise_seeds)


def _target_and_reference(ms: "list[PerturbationCurve]", ctx: EvalContext, xv: Tensor, labels: Tensor,
                          engine: CurveEngine) -> tuple[Tensor, Tensor | None]:
    """The scored class and, when the predicted class or relative curves need it, the
    unperturbed score: one counted forward of the batch, registered as the engine's first image."""
    s0 = ms[0].settings
    if not (s0.target == "predicted" or any(m.settings.relative for m in ms)):
        return labels, None
    logits = predict_logits(ctx.model, xv, int(ctx.max_batch), s0.amp)
    target = logits.argmax(1) if s0.target == "predicted" else labels
    engine.request(ms[0].name, "black", True, engine.n_units)
    probs = class_probabilities(ctx.model, logits) if s0.output == "softmax" else logits
    reference = probs.gather(1, target.view(-1, 1)).view(1, -1)
    ctx.count_forwards(ms[0].name, xv.shape[0])
    return target, reference


def _plan(m: "PerturbationCurve", run: _GroupRun) -> _Plan:
    """Engine rows and abscissae of each curve of ``m``; LeRF samples the mirror of the
    insertion grid, so its images are the insertion images."""
    st, engine, counts, n_units = m.settings, run.engine, run.counts, run.n_units
    x_frac = torch.tensor([c / n_units for c in counts], dtype=torch.float64)
    rows: dict[str, list[int]] = {}
    xs: dict[str, Tensor] = {}
    for curve in m._curves():
        if curve == "insertion":
            rows[curve] = [engine.request(m.name, st.ins_substrate, True, c) for c in counts]
            xs[curve] = x_frac
        elif curve in ("deletion", "morf"):
            rows[curve] = [engine.request(m.name, st.del_substrate, False, c) for c in counts]
            xs[curve] = x_frac
        else:  # lerf: mirror of the insertion grid, same images as insertion
            mirrored = sorted(counts, reverse=True)
            rows[curve] = [engine.request(m.name, st.del_substrate, True, c) for c in mirrored]
            xs[curve] = torch.tensor([1 - c / n_units for c in mirrored], dtype=torch.float64)
    return _Plan(m, rows, xs)


def _score_images(run: _GroupRun, ctx: EvalContext) -> Tensor:
    """Render and score every image the plans requested; (K,b_ok) scores, forwards counted."""
    s0, engine, xv = run.settings, run.engine, run.x
    substrates = {
        n: make_substrate(n, xv, ctx.normalization, blur_kernel=s0.blur_kernel, blur_sigma=s0.blur_sigma,
                          seeds=run.noise_seeds)
        for n in {k[0] for k in engine.keys if k[0] is not None}
    }
    spec = ForwardSpec(output=s0.output, max_batch=int(ctx.max_batch), amp=s0.amp)
    scores = engine.score(ctx.model, xv, run.rank_px, substrates, run.target, spec,
                          start=run.start, into=run.reference)
    for owner, n_img in engine.new_images_by_owner(run.start).items():
        ctx.count_forwards(owner, n_img * xv.shape[0])
    return scores


def _assemble(plan: _Plan, scores: Tensor, reference: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(value, curve, abscissa) of one metric from the engine's scores."""
    st = plan.metric.settings
    curves, aucs = {}, {}
    for curve, rows in plan.rows.items():
        c = scores[rows].T  # (b_ok, T)
        if st.relative:
            c = c / reference.view(-1, 1)
        curves[curve] = c
        aucs[curve] = curve_auc(c.double(), plan.xs[curve], st.auc)
    if st.kind == "id_score":
        return aucs["insertion"] - aucs["deletion"], curves["insertion"] - curves["deletion"], plan.xs["insertion"]
    if st.kind == "lerf_morf_gap":
        # common abscissa only when the grids coincide; else store the LeRF curve
        same = torch.equal(plan.xs["lerf"], plan.xs["morf"])
        curve_v = curves["lerf"] - curves["morf"] if same else curves["lerf"]
        return aucs["lerf"] - aucs["morf"], curve_v, plan.xs["lerf"]
    (name,) = plan.rows.keys()
    return aucs[name], curves[name], plan.xs[name]


def _fill(out: MetricOutput, assembled: tuple[Tensor, Tensor, Tensor], ok: Tensor, run: _GroupRun,
          st: CurveSettings) -> None:
    """Write one metric's values and curves into the rows of the finite samples of ``out``."""
    value, curve_v, cx = assembled
    b = out.values.shape[0]
    out.values[ok] = value.to(out.values)
    full_curve = torch.full((b, curve_v.shape[1]), float("nan"), dtype=torch.float32, device=out.values.device)
    full_curve[ok] = curve_v.float()
    out.curve, out.curve_x = full_curve, cx.float()
    out.extra = {"forwards_total": int(len(run.engine.keys) * run.x.shape[0]), "settings": asdict(st)}


class PerturbationCurve(Metric):
    """Insertion / Deletion / ID / LeRF / MoRF / LeRF-MoRF gap on one shared engine.

    Parameters (all optional; ``preset`` first, then explicit values): ``kind``, ``preset``
    (otsuki2024 / rise2018 / none), ``substrate`` (black / zero / mean / blur / min / road),
    ``insertion_substrate``, ``deletion_substrate``, ``pixels_per_step`` or ``steps``,
    ``grid`` (inclusive / otsuki), ``auc`` (trapezoid / uniform), ``target`` (label / predicted),
    ``output`` (softmax / logit), ``relative`` (divide by the unperturbed output), ``ties``
    (random / threshold / stable), ``patch_size``, ``patch_reduce`` (max / mean),
    ``blur_kernel``, ``blur_sigma``, ``amp`` (None / bf16 / fp16, CUDA only).
    """

    def __init__(self, name: str | None = None, **params: Any) -> None:
        super().__init__(name=name, **params)
        self.settings = resolve_settings(params)

    def group_key(self) -> Hashable:
        return ("perturbation_curve",) + self.settings.engine_key()

    def manifest(self) -> dict[str, Any]:
        return {"class": type(self).__name__, **self.params, "resolved": asdict(self.settings)}

    # -- identity by construction -----------------------------------------------------------
    @staticmethod
    def _record_settings(record: dict[str, Any]) -> CurveSettings | None:
        resolved = record.get("resolved")
        try:
            if isinstance(resolved, dict):
                return CurveSettings(**resolved).validate()
            params = {k: v for k, v in record.items() if k not in ("class", "higher_is_better", "base")}
            return resolve_settings(params)
        except (TypeError, ValueError):
            return None

    @staticmethod
    def _curve_keys(st: CurveSettings) -> dict[str, tuple]:
        """Key of each curve's AUC: the images it scores and how its area is taken.

        "keep" images hold the top-n units of x (Insertion; LeRF after N-n removals), "remove"
        images hold the substrate there (Deletion; MoRF). LeRF on the deletion substrate is
        sampled on the mirror of the insertion grid and its AUC (trapezoid or uniform) is
        invariant under that mirror, so it equals Insertion when both substrates agree.
        """
        common = st.engine_key() + (st.auc, bool(st.relative))
        return {
            "insertion": ("keep", st.ins_substrate) + common,
            "lerf": ("keep", st.del_substrate) + common,
            "deletion": ("remove", st.del_substrate) + common,
            "morf": ("remove", st.del_substrate) + common,
        }

    @classmethod
    def measurement_key(cls, record: dict[str, Any]) -> Hashable | None:
        """Insertion / LeRF and Deletion / MoRF on one substrate (Otsuki et al. 2024 supp.
        Eq. 9-10; Jeon et al. 2022 supp. §G) give equal keys, and so do ID score and the
        LeRF-MoRF gap; everything else about the curves (grid, ties, target, output, AUC,
        patches, blur, autocast) must match too."""
        st = cls._record_settings(record)
        if st is None:
            return None
        keys = cls._curve_keys(st)
        if st.kind == "id_score":
            return ("difference", keys["insertion"], keys["deletion"])
        if st.kind == "lerf_morf_gap":
            return ("difference", keys["lerf"], keys["morf"])
        return ("auc", keys[st.kind])

    @classmethod
    def components(cls, record: dict[str, Any]) -> tuple[Hashable, ...]:
        """ID score = Insertion - Deletion (Otsuki et al. 2024 §5); the gap = LeRF - MoRF."""
        st = cls._record_settings(record)
        if st is None or st.kind not in ("id_score", "lerf_morf_gap"):
            return ()
        keys = cls._curve_keys(st)
        a, b = ("insertion", "deletion") if st.kind == "id_score" else ("lerf", "morf")
        return (("auc", keys[a]), ("auc", keys[b]))

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        return self.evaluate_group([self], ctx, attribution)[self.name]

    # which curves a kind needs
    def _curves(self) -> tuple[str, ...]:
        k = self.settings.kind
        return {"insertion": ("insertion",), "deletion": ("deletion",),
                "id_score": ("insertion", "deletion"), "lerf": ("lerf",), "morf": ("morf",),
                "lerf_morf_gap": ("lerf", "morf")}[k]

    @classmethod
    def evaluate_group(cls, metrics: "list[Metric]", ctx: EvalContext,
                       attribution: Tensor) -> dict[str, MetricOutput]:
        """All curves of a group (equal :meth:`group_key`) from one set of scored images.

        Maps are summed over channels and resized to the input; samples with a non-finite map
        get NaN and the status ``nonfinite_attribution``."""
        ms: list[PerturbationCurve] = list(metrics)  # type: ignore[assignment]
        x = ctx.batch.x
        b = x.shape[0]
        a = single_channel_map(attribution.to(x.device).float(), x.shape[-2:])
        finite = torch.isfinite(a).flatten(1).all(1)
        status = ["ok" if f else "nonfinite_attribution" for f in finite.tolist()]
        ok = finite.nonzero().flatten()
        results = {m.name: _empty_output(b, x.device) for m in ms}
        for m in ms:
            results[m.name].status = list(status)
        if ok.numel() == 0:
            return results
        run = _start_group(ms, ctx, a, ok)
        plans = [_plan(m, run) for m in ms]
        scores = _score_images(run, ctx)
        for plan in plans:
            _fill(results[plan.metric.name], _assemble(plan, scores, run.reference), ok, run, plan.metric.settings)
        return results


def _empty_output(b: int, device: torch.device) -> MetricOutput:
    return MetricOutput(values=torch.full((b,), float("nan"), dtype=torch.float64, device=device),
                        status=["ok"] * b)


_DEFAULT_PRESET = "otsuki2024"
_REGISTRATIONS = [
    ("insertion", True, "Otsuki et al. 2024 supp. Eq. 9-10; Petsiuk et al. 2018 (RISE)",
     "Insertion AUC: score of the class as the most relevant pixels are inserted into a substrate"),
    ("deletion", False, "Otsuki et al. 2024 supp. Eq. 9-10; Petsiuk et al. 2018 (RISE)",
     "Deletion AUC: score of the class as the most relevant pixels are replaced by a substrate"),
    ("id_score", True, "Otsuki et al. 2024 §5 (ID = Insertion - Deletion)",
     "Insertion-Deletion score: Insertion AUC minus Deletion AUC"),
    ("lerf", True, "Jeon et al. 2022 (DGA) supp. Tables 1-3; Bach et al. 2015",
     "LeRF pixel flipping: least relevant pixels removed first (AUC, higher is better)"),
    ("morf", False, "Jeon et al. 2022 (DGA) supp. Tables 1-3; Bach et al. 2015",
     "MoRF pixel flipping: most relevant pixels removed first (AUC, lower is better)"),
    ("lerf_morf_gap", True, "Jeon et al. 2022 (DGA); LeRF AUC - MoRF AUC",
     "LeRF AUC minus MoRF AUC (higher is better)"),
]
for _name, _hib, _paper, _desc in _REGISTRATIONS:
    register_metric(_name, higher_is_better=_hib, paper=_paper, description=_desc,
                    defaults={"kind": _name, "preset": _DEFAULT_PRESET})(PerturbationCurve)

