"""The perturbation-curve engine shared by the Insertion / Deletion / ID / LeRF / MoRF metrics
(:mod:`saliencybench.metrics.pixel_perturbation`).

Pieces, in the order a group of curves uses them:

- :class:`CurveSettings`: the resolved parameters of one curve metric;
- :func:`make_substrate`: the image a perturbed unit takes its value from;
- :func:`pool_units`, :func:`unit_ranks`, :func:`ranks_to_pixels`: ranking units (pixels or
  patches) by attribution, with the tie rules ``random`` / ``threshold`` / ``stable``;
- :func:`count_grid`: how many units are inserted / deleted at each curve point;
- :class:`CurveEngine`: the distinct perturbed images a group of curves asks for, rendered on
  the device and scored once each in batches (:class:`ForwardSpec`);
- :func:`curve_auc` / :func:`uniform_auc`: the area under a curve.

Every curve point is one of two image kinds, "keep the top-n units of x, substrate elsewhere"
or "substrate on the top-n units, x elsewhere"; the engine keys images by (substrate, kind, n)
and recognises the unperturbed and the all-substrate image whatever curve asks for them, so
curves that share images (Deletion and MoRF on one substrate, LeRF and Insertion) share their
forward passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from saliencybench.attributions.postprocess import gaussian_smooth
from saliencybench.core.outputs import class_probabilities
from saliencybench.core.seeding import per_sample_rand, per_sample_randn
from saliencybench.core.tensors import autocast, fast_layout
from saliencybench.core.types import Normalization
from saliencybench.metrics.road import noisy_linear_impute

KINDS = ("insertion", "deletion", "id_score", "lerf", "morf", "lerf_morf_gap")
SUBSTRATES = ("black", "zero", "mean", "blur", "min", "road")
TIES = ("random", "threshold", "stable")
GRIDS = ("inclusive", "otsuki")
AUCS = ("trapezoid", "uniform")
OUTPUTS = ("softmax", "logit")
TARGETS = ("label", "predicted")


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


# -- building blocks ---------------------------------------------------------------------------


def make_substrate(name: str, x: Tensor, normalization: Normalization, *,
                   blur_kernel: int = 11, blur_sigma: float = 5.0, seeds: Sequence[int] | None = None) -> Tensor:
    """The image a perturbed unit takes its value from, (B,C,H,W) in normalised space.

    ``black``: pixel value 0 converted to normalised space (Otsuki et al.); ``zero``: 0 in
    normalised space (RISE deletion); ``mean``: per-sample, per-channel mean of x; ``blur``:
    Gaussian blur of x (RISE insertion, kernel 11, sigma 5, zero padding); ``min``: per-sample
    minimum over all channels and pixels (what Quantus calls "black"); ``road``: the per-sample
    noise of ROAD's imputation (:func:`road_noise`, needs ``seeds``), which the engine completes
    by the imputation itself (:func:`impute_road`).
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
    if name == ROAD:
        if seeds is None:
            raise ValueError("the road substrate needs per-sample seeds for its noise")
        return road_noise(x, seeds)
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


ArrayT = TypeVar("ArrayT")  # a torch Tensor or a NumPy array


def uniform_auc(curve: ArrayT) -> ArrayT:
    """Area under (B,T) curves sampled at uniformly spaced points of [0, 1]: the trapezoid rule
    (sum - y_0/2 - y_T/2)/T of RISE (Petsiuk et al. 2018) and of Otsuki et al. 2024's code; the
    first point where T = 0. Works on torch tensors and NumPy arrays alike (same arithmetic)."""
    t = curve.shape[1] - 1
    if t == 0:
        return curve[:, 0]
    return (curve.sum(1) - curve[:, 0] / 2 - curve[:, -1] / 2) / t


def curve_auc(curve: Tensor, x: Tensor, how: str) -> Tensor:
    """Area under (B,T) curves: trapezoid on the abscissa ``x`` (fractions in [0,1]), or
    :func:`uniform_auc`."""
    if curve.shape[1] == 1:
        return curve[:, 0].clone()
    if how == "trapezoid":
        return torch.trapezoid(curve, x.to(curve), dim=1)
    return uniform_auc(curve)


# -- the engine --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ForwardSpec:
    """How the engine scores an image: ``output`` (softmax / logit) of the target class, images
    per forward (``max_batch``), and autocast on CUDA (``amp``: None / bf16 / fp16)."""

    output: str = "softmax"
    max_batch: int = 256
    amp: str | None = None


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
        spec: ForwardSpec,
        *,
        start: int = 0,
        into: Tensor | None = None,
    ) -> Tensor:
        """Scores (K,B) of images ``keys[start:]`` (rows < start are kept from ``into``)."""
        max_batch = spec.max_batch
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
        road = torch.tensor([k[0] == ROAD for k in keys], device=dev) if ROAD in sub_of else None
        total = len(keys) * b
        flat = out[start:].view(-1)  # row-major (key, sample)
        for i0 in range(0, total, max(1, max_batch)):
            i1 = min(total, i0 + max(1, max_batch))
            idx = torch.arange(i0, i1, device=dev)
            t_idx, b_idx = idx // b, idx % b
            from_x = (rank_px[b_idx] < count[t_idx].view(-1, 1, 1, 1)) == keep[t_idx].view(-1, 1, 1, 1)
            images = torch.where(from_x, x[b_idx], sub_stack[sub_idx[t_idx], b_idx])
            if road is not None:
                images = impute_road(images, x[b_idx], from_x, road[t_idx])
            flat[i0:i1] = _target_scores(model, images, target[b_idx], spec)
        return out


# -- the ROAD substrate hook --------------------------------------------------------------------

ROAD = "road"
#: Standard deviation of ROAD's imputation noise, in the units of the (normalised) model input:
#: 0.01 as in Rong et al. 2022's code and Quantus's ``noisy_linear_imputation``.
ROAD_NOISE_STD = 0.01


def road_noise(x: Tensor, seeds: Sequence[int]) -> Tensor:
    """(B,C,H,W) noise of ROAD's imputation, ``ROAD_NOISE_STD`` times a standard normal drawn per
    sample from its own seed: every perturbed image of a sample (each step of its MoRF / LeRF
    curves) carries the same noise on its removed pixels, whatever the batch layout."""
    return per_sample_randn(seeds, x.shape[1:], x.device, x.dtype).mul_(ROAD_NOISE_STD)


def impute_road(images: Tensor, x: Tensor, from_x: Tensor, is_road: Tensor) -> Tensor:
    """Complete the ``road`` rows of a chunk of rendered images by noisy linear imputation
    (Rong et al. 2022, Sec. 4): a removed pixel (``~from_x``) becomes the solution of the
    8-neighbour system of its image plus the noise the substrate put there. All road images of
    the chunk are solved in one batched call (:func:`noisy_linear_impute`); other rows are
    returned unchanged."""
    rows = is_road.nonzero().flatten()
    if rows.numel() == 0:
        return images
    removed = ~from_x[rows]
    filled = noisy_linear_impute(x[rows], removed, noise_std=0.0)
    out = images.clone()
    out[rows] = filled + removed * images[rows]
    return out


@torch.no_grad()
def _target_scores(model: torch.nn.Module, images: Tensor, target: Tensor, spec: ForwardSpec) -> Tensor:
    with autocast(images.device, spec.amp):
        logits = model(fast_layout(images))
    logits = logits.float()
    if spec.output == "softmax":
        logits = class_probabilities(model, logits)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: Tensor, max_batch: int, amp: str | None = None) -> Tensor:
    outs = []
    for i in range(0, x.shape[0], max(1, max_batch)):
        with autocast(x.device, amp):
            outs.append(model(fast_layout(x[i:i + max_batch])).float())
    return torch.cat(outs)
