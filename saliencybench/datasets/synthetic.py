"""The embedded default dataset: procedurally generated shapes on textured backgrounds.

Each 64x64 RGB image holds one *class object* (its shape decides the label: disk, square,
triangle, cross, ring, star, crescent, frame) at a random position, scale, rotation and colour,
drawn over a textured background (smooth colour noise plus stripes) and a few distractors
(thin lines and soft blobs, which are no class shape and are drawn with the same palette as
objects). A model therefore has to find the object and read its shape. Every sample carries a
binary mask (1,H,W) of the class object only, for localization metrics.

Generation is vectorised torch on CPU: shapes are inside-tests on rotated coordinate grids.
The split is rendered in fixed blocks of :data:`BLOCK` samples, each block from its own
generator seeded by ``stable_seed("synthetic", seed, split, block)``; a sample therefore
depends only on (seed, split, index), train / val / test never share a stream, and any range
of a split can be regenerated on its own (the trainer streams the train split this way).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from saliencybench.core.registry import register_dataset
from saliencybench.core.types import Normalization, SampleSet
from saliencybench.datasets.sampling import class_balanced_indices

CLASS_NAMES: tuple[str, ...] = (
    "disk", "square", "triangle", "cross", "ring", "star", "crescent", "frame",
)
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_SIZES: dict[str, int] = {"train": 12000, "val": 1000, "test": 2000}
#: Normalisation constants chosen once for this dataset: x = (pixel - 0.5) / 0.25.
SYNTHETIC_NORMALIZATION = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
#: Samples per independently seeded block (a multiple of the class count: balanced blocks).
BLOCK = 200

# Geometry in pixels at the reference size 64 (scaled with ``size``).
_RADIUS_RANGE = (9.0, 16.0)       # class object circumradius
_LINE_HALF_LEN = (5.0, 14.0)      # distractor lines
_LINE_HALF_WIDTH = (0.6, 1.4)
_BLOB_SIGMA = (1.2, 2.6)          # distractor blobs (soft, far smaller than any object)
_N_LINES = 3
_N_BLOBS = 3


def _block_seed(seed: int, split: str, block: int) -> int:
    h = hashlib.sha256(f"synthetic\x1f{seed}\x1f{split}\x1f{block}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float, *tail: int) -> Tensor:
    return lo + (hi - lo) * torch.rand((n, *tail), generator=g)


# --- shape inside-tests in local coordinates (u, v), object circumradius 1 --------------------

def _polygon_inside(u: Tensor, v: Tensor, sides: int, apothem: float, offset: float) -> Tensor:
    """Regular polygon as an intersection of half-planes n_k . p <= apothem."""
    k = torch.arange(sides, dtype=u.dtype)
    ang = offset + 2 * math.pi * k / sides
    proj = u.unsqueeze(-1) * torch.cos(ang) + v.unsqueeze(-1) * torch.sin(ang)
    return proj.amax(-1) <= apothem


def _star_inside(u: Tensor, v: Tensor, points: int = 5, inner: float = 0.45) -> Tensor:
    """Star polygon: fold the angle into one half-sector and test the edge outer->inner vertex."""
    sector = 2 * math.pi / points
    rho = torch.sqrt(u * u + v * v)
    phi = torch.remainder(torch.atan2(v, u), sector)
    a = torch.minimum(phi, sector - phi)
    px, py = rho * torch.cos(a), rho * torch.sin(a)
    wx, wy = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    # cross((W - V), (P - V)) >= 0 with V = (1, 0): the origin's side of the edge
    return (wx - 1.0) * py - wy * (px - 1.0) >= 0


def _shape_inside(label: int, u: Tensor, v: Tensor) -> Tensor:
    name = CLASS_NAMES[label]
    if name == "disk":
        return u * u + v * v <= 0.9**2
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.8
    if name == "triangle":
        return _polygon_inside(u, v, 3, 0.58, -math.pi / 2)
    if name == "cross":
        au, av = u.abs(), v.abs()
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "star":
        return _star_inside(u, v)
    if name == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.8**2)
    if name == "frame":
        m = torch.maximum(u.abs(), v.abs())
        return (m <= 0.85) & (m >= 0.5)
    raise ValueError(f"unknown shape {name}")  # pragma: no cover


def _palette(g: torch.Generator, dark: Tensor, k: int) -> Tensor:
    """``k`` colours per sample for objects and distractors: the luminance band opposite the background's."""
    lo = torch.where(dark, 0.6, 0.0).view(-1, 1, 1, 1, 1)
    return lo + 0.4 * torch.rand(dark.shape[0], k, 3, 1, 1, generator=g)


def _background(g: torch.Generator, n: int, size: int, grid: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(image, dark?): two colours of one luminance band, mixed by smooth noise and stripes."""
    s, (Y, X) = size / 64.0, grid
    dark = torch.rand(n, generator=g) < 0.5
    band_lo = torch.where(dark, 0.0, 0.55).view(n, 1, 1, 1)
    c1 = band_lo + 0.45 * torch.rand(n, 3, 1, 1, generator=g)
    c2 = band_lo + 0.45 * torch.rand(n, 3, 1, 1, generator=g)
    low = torch.rand(n, 1, 6, 6, generator=g)
    noise = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    theta = _uniform(g, n, 0.0, math.pi).view(n, 1, 1, 1)
    freq = _uniform(g, n, 0.15, 0.6).view(n, 1, 1, 1) / s
    phase = _uniform(g, n, 0.0, 2 * math.pi).view(n, 1, 1, 1)
    stripe_amp = _uniform(g, n, 0.0, 0.5).view(n, 1, 1, 1)
    stripes = torch.sin(freq * (X * torch.cos(theta) + Y * torch.sin(theta)) + phase)
    w = (noise + stripe_amp * 0.5 * stripes).clamp(0.0, 1.0)
    img = c1 + (c2 - c1) * w
    return img + 0.02 * torch.randn(n, 3, size, size, generator=g), dark


def _distractors(g: torch.Generator, img: Tensor, dark: Tensor, grid: tuple[Tensor, Tensor]) -> Tensor:
    """Draw distractor lines (hard edged) and soft blobs over ``img`` (under the object)."""
    n, size, s, (Y, X) = img.shape[0], img.shape[-1], img.shape[-1] / 64.0, grid
    line_col = _palette(g, dark, _N_LINES)
    lx, ly = _uniform(g, n, 0, size, _N_LINES), _uniform(g, n, 0, size, _N_LINES)
    lang = _uniform(g, n, 0, math.pi, _N_LINES)
    lhl = _uniform(g, n, *_LINE_HALF_LEN, _N_LINES) * s
    lhw = _uniform(g, n, *_LINE_HALF_WIDTH, _N_LINES) * s
    lon = torch.rand(n, _N_LINES, generator=g) < 0.8
    blob_col = _palette(g, dark, _N_BLOBS)
    bx, by = _uniform(g, n, 0, size, _N_BLOBS), _uniform(g, n, 0, size, _N_BLOBS)
    bsig = _uniform(g, n, *_BLOB_SIGMA, _N_BLOBS) * s
    bon = torch.rand(n, _N_BLOBS, generator=g) < 0.8
    for k in range(_N_LINES):
        dx, dy = X - lx[:, k].view(n, 1, 1), Y - ly[:, k].view(n, 1, 1)
        ca, sa = torch.cos(lang[:, k]).view(n, 1, 1), torch.sin(lang[:, k]).view(n, 1, 1)
        along, across = dx * ca + dy * sa, -dx * sa + dy * ca
        hit = (along.abs() <= lhl[:, k].view(n, 1, 1)) & (across.abs() <= lhw[:, k].view(n, 1, 1))
        hit = (hit & lon[:, k].view(n, 1, 1)).unsqueeze(1)
        img = torch.where(hit, line_col[:, k], img)
    for k in range(_N_BLOBS):
        d2 = (X - bx[:, k].view(n, 1, 1)) ** 2 + (Y - by[:, k].view(n, 1, 1)) ** 2
        alpha = torch.exp(-d2 / (2 * bsig[:, k].view(n, 1, 1) ** 2)) * bon[:, k].view(n, 1, 1)
        alpha = alpha.unsqueeze(1)
        img = img + alpha * (blob_col[:, k] - img)
    return img


def _class_object(g: torch.Generator, img: Tensor, dark: Tensor, labels: Tensor,
                  grid: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Draw the class object on top of ``img``; returns (image clamped to [0, 1], object mask)."""
    n, size, s, (Y, X) = img.shape[0], img.shape[-1], img.shape[-1] / 64.0, grid
    r = _uniform(g, n, *_RADIUS_RANGE) * s
    cx = r + 2 * s + torch.rand(n, generator=g) * (size - 2 * r - 4 * s)
    cy = r + 2 * s + torch.rand(n, generator=g) * (size - 2 * r - 4 * s)
    rot = _uniform(g, n, 0, 2 * math.pi)
    obj_col = _palette(g, dark, 1)[:, 0]
    dx = (X - cx.view(n, 1, 1)) / r.view(n, 1, 1)
    dy = (Y - cy.view(n, 1, 1)) / r.view(n, 1, 1)
    cr, sr = torch.cos(rot).view(n, 1, 1), torch.sin(rot).view(n, 1, 1)
    u, v = dx * cr + dy * sr, -dx * sr + dy * cr
    inside = torch.zeros(n, size, size, dtype=torch.bool)
    for c in range(NUM_CLASSES):
        idx = (labels == c).nonzero().flatten()
        if idx.numel():
            inside[idx] = _shape_inside(c, u[idx], v[idx])
    mask = inside.unsqueeze(1)
    obj = obj_col + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return torch.where(mask, obj, img).clamp_(0.0, 1.0), mask


def render_block(n: int, generator: torch.Generator, size: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """Render ``n`` samples from ``generator``.

    Returns ``(pixels, labels, mask)``: pixels (n,3,size,size) float32 in [0,1], labels (n,)
    int64 (a seeded permutation of ``arange(n) % NUM_CLASSES``, so a block is class balanced),
    mask (n,1,size,size) bool of the class object. The generator is consumed in a fixed
    order: labels, background, distractors, object.
    """
    g = generator
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    grid = (coords.view(1, size, 1), coords.view(1, 1, size))  # (Y, X)
    img, dark = _background(g, n, size, grid)
    img = _distractors(g, img, dark, grid)
    img, mask = _class_object(g, img, dark, labels, grid)
    return img, labels, mask


def generate_range(
    split: str, start: int, stop: int, *, seed: int = 0, size: int = 64
) -> tuple[Tensor, Tensor, Tensor]:
    """Samples ``start..stop-1`` of ``split`` as ``(pixels, labels, mask)`` (see :func:`render_block`).

    Only the blocks that overlap the range are rendered; the result does not depend on how
    a split is cut into ranges.
    """
    _check_split(split)
    if not 0 <= start <= stop:
        raise ValueError(f"bad range {start}..{stop}")
    pix, lab, msk = [], [], []
    for b in range(start // BLOCK, (stop + BLOCK - 1) // BLOCK):
        g = torch.Generator().manual_seed(_block_seed(seed, split, b))
        p, y, m = render_block(BLOCK, g, size)
        lo, hi = max(start - b * BLOCK, 0), min(stop - b * BLOCK, BLOCK)
        pix.append(p[lo:hi])
        lab.append(y[lo:hi])
        msk.append(m[lo:hi])
    if not pix:
        return (torch.empty(0, 3, size, size), torch.empty(0, dtype=torch.long),
                torch.empty(0, 1, size, size, dtype=torch.bool))
    return torch.cat(pix), torch.cat(lab), torch.cat(msk)


def _check_split(split: str) -> None:
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split '{split}' for dataset 'synthetic'; use one of {sorted(SPLIT_SIZES)}")


@register_dataset(
    "synthetic",
    num_classes=NUM_CLASSES,
    image_size=(64, 64),
    class_names=CLASS_NAMES,
    splits=dict(SPLIT_SIZES),
    normalization=SYNTHETIC_NORMALIZATION,
    has_mask=True,
    description="procedural shapes (8 classes) on textured backgrounds with distractors; object masks",
)
def synthetic(
    *,
    split: str = "test",
    n_samples: int | None = None,
    seed: int = 0,
    size: int = 64,
    root: str | None = None,
    split_size: int | None = None,
    **kw: Any,
) -> SampleSet:
    """The embedded default dataset as a :class:`SampleSet` (normalised x, labels, object masks).

    Args:
        split: "train", "val" or "test" (disjoint seed streams; sizes :data:`SPLIT_SIZES`).
        n_samples: class-balanced deterministic selection (``class_balanced_indices``);
            ``None`` keeps the whole split, in balanced order.
        seed: seeds both the generation stream and the selection.
        size: image side in pixels (geometry scales with it; models are trained at 64).
        root: unused (nothing is read from disk); accepted for a uniform dataset API.
        split_size: generate only the first ``split_size`` samples of the split (tests).
    """
    if kw:
        raise TypeError(f"synthetic() got unexpected keyword arguments {sorted(kw)}")
    _check_split(split)
    total = SPLIT_SIZES[split] if split_size is None else min(int(split_size), SPLIT_SIZES[split])
    pixels, labels, mask = generate_range(split, 0, total, seed=seed, size=size)
    order = class_balanced_indices(labels, n_samples, seed=seed)
    idx = torch.as_tensor(order, dtype=torch.long)
    x = SYNTHETIC_NORMALIZATION.from_pixel(pixels[idx])
    return SampleSet(
        x,
        labels[idx],
        normalization=SYNTHETIC_NORMALIZATION,
        num_classes=NUM_CLASSES,
        sample_ids=[f"{split}-{i:06d}" for i in order],
        mask=mask[idx].float(),
        name="synthetic",
        class_names=CLASS_NAMES,
        info={"split": split, "seed": seed, "size": size, "generated": total,
              "selected": len(order), "normalization": "mean 0.5, std 0.25 per channel"},
    )
