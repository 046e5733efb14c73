"""Perturbation curves: Insertion / Deletion / ID score and LeRF / MoRF pixel flipping.

One engine serves all six registered metrics (``insertion``, ``deletion``, ``id_score``,
``lerf``, ``morf``, ``lerf_morf_gap``), so that the forward passes they have in common are
paid once.

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

- ``otsuki2024`` (paper 001 and its code): 500 pixels per step, the k-th point thresholds at
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

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from saliencybench.attributions.postprocess import gaussian_smooth
from saliencybench.core.registry import register_metric
from saliencybench.core.seeding import per_sample_rand, stable_seed
from saliencybench.core.tensors import autocast, fast_layout
from saliencybench.core.types import EvalContext, MetricOutput, Normalization
from saliencybench.metrics.base import Metric
from saliencybench.core.outputs import class_probabilities

KINDS = ("insertion", "deletion", "id_score", "lerf", "morf", "lerf_morf_gap")
SUBSTRATES = ("black", "zero", "mean", "blur", "min")
TIES = ("random", "threshold", "stable")
GRIDS = ("inclusive", "otsuki")
AUCS = ("trapezoid", "uniform")
OUTPUTS = ("softmax", "logit")
TARGETS = ("label", "predicted")

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


@dataclass(frozen=True)
class CurveSettings:
    """Resolved parameters of one perturbation metric (preset, then explicit parameters)."""

    kind: str = "insertion"
    substrate: str = "black"
    insertion_substrate: str | None = None  # None: use ``substrate``
    deletion_substrate: str | None = None  # None: use ``substrate`` (also MoRF / LeRF)
    pixels_per_step: int | None = 500
    steps: int | None = None  # number of steps; overrides pixels_per_step
    grid: str = "inclusive"
    auc: str = "trapezoid"
    target: str = "label"
    output: str = "softmax"
    relative: bool = False  # divide every point by the unperturbed output
    ties: str = "random"
    patch_size: int = 1
    patch_reduce: str = "max"
    blur_kernel: int = 11
    blur_sigma: float = 5.0
    amp: str | None = None  # None / "bf16" / "fp16" autocast on CUDA

    def validate(self) -> "CurveSettings":
        checks = [
            ("kind", self.kind, KINDS), ("substrate", self.substrate, SUBSTRATES),
            ("grid", self.grid, GRIDS), ("auc", self.auc, AUCS), ("target", self.target, TARGETS),
            ("output", self.output, OUTPUTS), ("ties", self.ties, TIES),
            ("patch_reduce", self.patch_reduce, ("max", "mean")),
            ("amp", self.amp, (None, "bf16", "fp16")),
        ]
        for s in (self.insertion_substrate, self.deletion_substrate):
            if s is not None:
                checks.append(("substrate", s, SUBSTRATES))
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"perturbation metric: {name}={value!r} is not one of {allowed}")
        if self.steps is None and (self.pixels_per_step is None or self.pixels_per_step < 1):
            raise ValueError("perturbation metric: give pixels_per_step >= 1 or steps >= 1")
        if self.steps is not None and self.steps < 1:
            raise ValueError("perturbation metric: steps must be >= 1")
        if self.patch_size < 1:
            raise ValueError("perturbation metric: patch_size must be >= 1")
        return self

    # substrates used by each curve
    @property
    def ins_substrate(self) -> str:
        return self.insertion_substrate or self.substrate

    @property
    def del_substrate(self) -> str:
        return self.deletion_substrate or self.substrate

    def engine_key(self) -> tuple:
        """What must be equal for two metrics to share rendered images and their scores."""
        return (
            self.pixels_per_step if self.steps is None else None, self.steps, self.grid,
            self.target, self.output, self.ties, self.patch_size, self.patch_reduce,
            self.blur_kernel, float(self.blur_sigma), self.amp,
        )


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


# -- building blocks ---------------------------------------------------------------------------


def make_substrate(name: str, x: Tensor, normalization: Normalization, *,
                   blur_kernel: int = 11, blur_sigma: float = 5.0) -> Tensor:
    """The image a perturbed unit takes its value from, (B,C,H,W) in normalised space.

    ``black``: pixel value 0 converted to normalised space (Otsuki et al.); ``zero``: 0 in
    normalised space (RISE deletion); ``mean``: per-sample, per-channel mean of x; ``blur``:
    Gaussian blur of x (RISE insertion, kernel 11, sigma 5, zero padding); ``min``: per-sample
    minimum over all channels and pixels (what Quantus calls "black").
    """
    if name == "black":
        return normalization.pixel_value(0.0, x)
    if name == "zero":
        return torch.zeros_like(x)
    if name == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if name == "blur":
        return gaussian_smooth(x, int(blur_kernel), float(blur_sigma))
    if name == "min":
        return x.flatten(1).amin(1).view(-1, 1, 1, 1).expand_as(x).contiguous()
    raise ValueError(f"unknown substrate {name!r}")


def pool_units(a: Tensor, patch_size: int, reduce: str = "max") -> Tensor:
    """(B,1,H,W) map -> (B,N) unit scores (pixels, or p x p patches pooled by max / mean)."""
    if patch_size == 1:
        return a.flatten(1)
    if reduce == "max":
        pooled = F.max_pool2d(a, patch_size, ceil_mode=True)
    else:
        pooled = F.avg_pool2d(a, patch_size, ceil_mode=True, count_include_pad=False)
    return pooled.flatten(1)


def unit_ranks(scores: Tensor, ties: str, seeds: Sequence[int] | None = None) -> Tensor:
    """Rank of every unit, 0 = most relevant, (B,N) int64.

    ``random``: ties broken by a per-sample permutation drawn from ``seeds`` (only samples that
    have ties draw it); ``stable``: ties in raster order; ``threshold``: tied units share the
    smallest rank of their group, so a step that reaches one of them takes all of them.
    """
    b, n = scores.shape
    values, order = scores.sort(dim=1, descending=True, stable=True)
    if ties == "threshold":
        # rank = position of the first unit with the same value in the sorted order
        ascending = (-values).contiguous()
        return torch.searchsorted(ascending, (-scores).contiguous(), right=False)
    if ties == "random":
        tied = (values[:, 1:] == values[:, :-1]).any(1)
        if bool(tied.any()):
            if seeds is None:
                raise ValueError("random tie-breaking needs per-sample seeds")
            idx = tied.nonzero().flatten()
            u = per_sample_rand([seeds[i] for i in idx.tolist()], (n,), scores.device)
            perm = u.argsort(dim=1)
            shuffled = scores[idx].gather(1, perm)
            inner = shuffled.sort(dim=1, descending=True, stable=True).indices
            order = order.clone()
            order[idx] = perm.gather(1, inner)
    elif ties != "stable":
        raise ValueError(f"unknown tie rule {ties!r}")
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=scores.device).expand(b, n).contiguous())
    return ranks


def ranks_to_pixels(ranks: Tensor, size: tuple[int, int], patch_size: int) -> Tensor:
    """(B,N) unit ranks -> (B,1,H,W) int32 rank of the unit each pixel belongs to."""
    h, w = size
    if patch_size == 1:
        return ranks.view(-1, 1, h, w).to(torch.int32)
    hu, wu = math.ceil(h / patch_size), math.ceil(w / patch_size)
    r = ranks.view(-1, 1, hu, wu).to(torch.int32)
    r = r.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    return r[:, :, :h, :w].contiguous()


def count_grid(n_units: int, settings: CurveSettings) -> list[int]:
    """Numbers of units inserted / deleted at each curve point.

    ``inclusive``: 0, s, 2s, ..., N (s units per step, or ``steps`` equal steps), so the curve
    includes 0 % and 100 %. ``otsuki``: the authors' code thresholds at sorted index
    min(s k, N-1) for k = 1..ceil(N/s), i.e. min(s k + 1, N) units, no 0 % point.
    """
    if settings.steps is not None:
        k = settings.steps
        counts = [round(i * n_units / k) for i in range(k + 1)]
        if settings.grid == "otsuki":
            counts = counts[1:]
        return counts
    s = max(1, int(settings.pixels_per_step) // (settings.patch_size ** 2))
    k = math.ceil(n_units / s)
    if settings.grid == "otsuki":
        return [min(s * i, n_units - 1) + 1 for i in range(1, k + 1)]
    return [min(s * i, n_units) for i in range(k + 1)]


def curve_auc(curve: Tensor, x: Tensor, how: str) -> Tensor:
    """Area under (B,T) curves: trapezoid on the abscissa ``x`` (fractions in [0,1]), or the
    uniform-spacing trapezoid (sum - y_0/2 - y_T/2)/T of RISE and Otsuki et al.'s code."""
    if curve.shape[1] == 1:
        return curve[:, 0].clone()
    if how == "trapezoid":
        return torch.trapezoid(curve, x.to(curve), dim=1)
    t = curve.shape[1] - 1
    return (curve.sum(1) - curve[:, 0] / 2 - curve[:, -1] / 2) / t


# -- the engine --------------------------------------------------------------------------------

ImageKey = tuple[str | None, bool, int]  # (substrate, keep_top, n); (None, True, N) = unperturbed


class CurveEngine:
    """Collects the distinct perturbed images a group of curves needs, renders them on the
    device in chunks of ``max_batch`` images and scores each once.

    An image is (substrate s, keep, n): pixels whose unit rank is < n come from x when
    ``keep`` (insertion / LeRF) and from s otherwise (deletion / MoRF).
    """

    def __init__(self, n_units: int) -> None:
        self.n_units = n_units
        self.keys: list[ImageKey] = []
        self.index: dict[ImageKey, int] = {}
        self.owner: list[str] = []

    def canonical(self, substrate: str, keep: bool, n: int) -> ImageKey:
        n_all = self.n_units
        if (keep and n >= n_all) or (not keep and n <= 0):
            return (None, True, n_all)
        if (keep and n <= 0) or (not keep and n >= n_all):
            return (substrate, True, 0)
        return (substrate, keep, int(n))

    def request(self, owner: str, substrate: str, keep: bool, n: int) -> int:
        key = self.canonical(substrate, keep, n)
        if key not in self.index:
            self.index[key] = len(self.keys)
            self.keys.append(key)
            self.owner.append(owner)
        return self.index[key]

    def new_images_by_owner(self, start: int = 0) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.owner[start:]:
            out[o] = out.get(o, 0) + 1
        return out

    def score(
        self,
        model: torch.nn.Module,
        x: Tensor,
        rank_px: Tensor,
        substrates: dict[str, Tensor],
        target: Tensor,
        *,
        output: str,
        max_batch: int,
        amp: str | None = None,
        start: int = 0,
        into: Tensor | None = None,
    ) -> Tensor:
        """Scores (K,B) of images ``keys[start:]`` (rows < start are kept from ``into``)."""
        b = x.shape[0]
        k_all = len(self.keys)
        out = torch.full((k_all, b), float("nan"), device=x.device) if into is None else into
        if into is not None and into.shape[0] < k_all:
            out = torch.cat([into, into.new_full((k_all - into.shape[0], b), float("nan"))])
        if start >= k_all:
            return out
        names = sorted({k[0] for k in self.keys[start:] if k[0] is not None}) or ["__none__"]
        sub_stack = torch.stack([substrates[n] if n != "__none__" else x for n in names])
        sub_of = {n: i for i, n in enumerate(names)}
        keys = self.keys[start:]
        dev = x.device
        sub_idx = torch.tensor([sub_of.get(k[0], 0) for k in keys], device=dev)
        keep = torch.tensor([k[1] for k in keys], device=dev)
        count = torch.tensor([k[2] for k in keys], device=dev, dtype=torch.int32)
        total = len(keys) * b
        flat = out[start:].view(-1)  # row-major (key, sample)
        for i0 in range(0, total, max(1, max_batch)):
            i1 = min(total, i0 + max(1, max_batch))
            idx = torch.arange(i0, i1, device=dev)
            t_idx, b_idx = idx // b, idx % b
            from_x = (rank_px[b_idx] < count[t_idx].view(-1, 1, 1, 1)) == keep[t_idx].view(-1, 1, 1, 1)
            images = torch.where(from_x, x[b_idx], sub_stack[sub_idx[t_idx], b_idx])
            flat[i0:i1] = _target_scores(model, images, target[b_idx], output, amp)
        return out


@torch.no_grad()
def _target_scores(model: torch.nn.Module, images: Tensor, target: Tensor, output: str,
                   amp: str | None) -> Tensor:
    with autocast(images.device, amp):
        logits = model(fast_layout(images))
    logits = logits.float()
    if output == "softmax":
        logits = class_probabilities(model, logits)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: Tensor, max_batch: int, amp: str | None = None) -> Tensor:
    outs = []
    for i in range(0, x.shape[0], max(1, max_batch)):
        with autocast(x.device, amp):
            outs.append(model(fast_layout(x[i:i + max_batch])).float())
    return torch.cat(outs)


# -- the metric --------------------------------------------------------------------------------


@dataclass
class _Plan:
    metric: "PerturbationCurve"
    rows: dict[str, list[int]]  # curve name -> engine rows, in abscissa order
    xs: dict[str, Tensor]


class PerturbationCurve(Metric):
    """Insertion / Deletion / ID / LeRF / MoRF / LeRF-MoRF gap on one shared engine.

    Parameters (all optional; ``preset`` first, then explicit values): ``kind``, ``preset``
    (otsuki2024 / rise2018 / none), ``substrate`` (black / zero / mean / blur / min),
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
        ms: list[PerturbationCurve] = list(metrics)  # type: ignore[assignment]
        s0 = ms[0].settings
        x = ctx.batch.x
        b, _, h, w = x.shape
        a = attribution.to(x.device).float()
        if a.ndim == 3:
            a = a.unsqueeze(1)
        if a.shape[1] != 1:
            a = a.sum(1, keepdim=True)
        if tuple(a.shape[-2:]) != (h, w):
            a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        finite = torch.isfinite(a).flatten(1).all(1)
        status = ["ok" if f else "nonfinite_attribution" for f in finite.tolist()]
        ok = finite.nonzero().flatten()
        results = {m.name: _empty_output(b, x.device) for m in ms}
        if ok.numel() == 0:
            for m in ms:
                results[m.name].status = list(status)
            return results

        all_ok = ok.numel() == b
        xv, av = (x, a) if all_ok else (x[ok], a[ok])
        ids = [ctx.batch.sample_ids[i] for i in ok.tolist()]
        seeds = [stable_seed(ctx.seed, "perturbation-ties", sid) for sid in ids]
        units = pool_units(av, s0.patch_size, s0.patch_reduce)
        n_units = units.shape[1]
        rank_px = ranks_to_pixels(unit_ranks(units, s0.ties, seeds), (h, w), s0.patch_size)
        counts = count_grid(n_units, s0)
        model = ctx.model
        max_batch = int(ctx.max_batch)
        engine = CurveEngine(n_units)

        # target and (if needed) unperturbed output: one counted forward of the batch
        labels = ctx.batch.y.to(x.device)[ok].long()
        need_orig = s0.target == "predicted" or any(m.settings.relative for m in ms)
        scores_pre: Tensor | None = None
        if need_orig:
            logits = predict_logits(model, xv, max_batch, s0.amp)
            target = logits.argmax(1) if s0.target == "predicted" else labels
            engine.request(ms[0].name, "black", True, n_units)
            probs = class_probabilities(model, logits) if s0.output == "softmax" else logits
            scores_pre = probs.gather(1, target.view(-1, 1)).view(1, -1)
            ctx.count_forwards(ms[0].name, xv.shape[0])
        else:
            target = labels
        start = len(engine.keys)

        plans: list[_Plan] = []
        x_frac = torch.tensor([c / n_units for c in counts], dtype=torch.float64)
        for m in ms:
            st = m.settings
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
            plans.append(_Plan(m, rows, xs))

        substrate_names = {k[0] for k in engine.keys if k[0] is not None}
        substrates = {
            n: make_substrate(n, xv, ctx.normalization, blur_kernel=s0.blur_kernel,
                              blur_sigma=s0.blur_sigma)
            for n in substrate_names
        }
        scores = engine.score(model, xv, rank_px, substrates, target, output=s0.output,
                              max_batch=max_batch, amp=s0.amp, start=start, into=scores_pre)
        for owner, n_img in engine.new_images_by_owner(start).items():
            ctx.count_forwards(owner, n_img * xv.shape[0])
        reference = scores[engine.index[(None, True, n_units)]] if need_orig else None

        for plan in plans:
            m, st = plan.metric, plan.metric.settings
            curves, aucs = {}, {}
            for curve, rows in plan.rows.items():
                c = scores[rows].T  # (b_ok, T)
                if st.relative:
                    c = c / reference.view(-1, 1)
                curves[curve] = c
                aucs[curve] = curve_auc(c.double(), plan.xs[curve], st.auc)
            kind = st.kind
            if kind == "id_score":
                value, curve_v = aucs["insertion"] - aucs["deletion"], curves["insertion"] - curves["deletion"]
                cx = plan.xs["insertion"]
            elif kind == "lerf_morf_gap":
                value = aucs["lerf"] - aucs["morf"]
                # common abscissa only when the grids coincide; else store the LeRF curve
                same = torch.equal(plan.xs["lerf"], plan.xs["morf"])
                curve_v = curves["lerf"] - curves["morf"] if same else curves["lerf"]
                cx = plan.xs["lerf"]
            else:
                (name,) = plan.rows.keys()
                value, curve_v, cx = aucs[name], curves[name], plan.xs[name]
            out = results[m.name]
            out.values[ok] = value.to(out.values)
            full_curve = torch.full((b, curve_v.shape[1]), float("nan"), dtype=torch.float32,
                                    device=x.device)
            full_curve[ok] = curve_v.float()
            out.curve, out.curve_x = full_curve, cx.float()
            out.status = list(status)
            out.extra = {"forwards_total": int(len(engine.keys) * xv.shape[0]),
                         "settings": asdict(st)}
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
