"""AggAtt: aggregate attribution maps per localization percentile bin.

Rao, Böhle & Schiele 2022, main paper §3.2 and supplement §H.4 (and their official code):
maps are sorted by localization score in descending order (ties broken by the positive
attribution inside the target cell, the numerator of Eq. 2, also descending), split into
bins at the percentiles [0, 2, 5, 50, 95, 98, 100], and each bin's map is the mean of the
maps' **positive parts** (a signed method such as IxG or IG would otherwise average towards
an empty bin). The bins of one method share a single normaliser, the 99.5th percentile over
**all** pixels of all its bins, zeros included, so that strength is comparable across bins.
The paper's example panels show, per bin, the map of the bin's median sample
(:func:`bin_median_positions`).

:func:`aggatt_bins` and :func:`aggatt_normalise` are pure; :func:`plot_aggatt` draws a
methods x bins figure (like Rao et al. 2022 Fig. 12) and :func:`plot_aggatt_examples` the median-sample
panels. Figures keep few pixels per map (``max_side``) so that the committed PNGs stay small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

DEFAULT_PERCENTILES: tuple[float, ...] = (0, 2, 5, 50, 95, 98, 100)


@dataclass(frozen=True)
class MosaicStyle:
    """How a methods x bins figure is drawn: maps average-pooled to at most ``max_side`` pixels
    a side, ``zoom`` screen pixels per map pixel, ``pad`` pixels between maps, at ``dpi``."""

    max_side: int | None = 24
    dpi: int = 72
    zoom: int = 2
    pad: int = 2


def align_to_top_left(maps: Tensor, cells: list[int], n: int) -> Tensor:
    """Cyclically shift each map by whole cells so that its scored cell becomes the top-left
    one (a permutation of the cells: localization w.r.t. the moved cell is unchanged)."""
    h, w = maps.shape[-2] // n, maps.shape[-1] // n
    out = maps.clone()
    for c in sorted(set(cells)):
        idx = torch.as_tensor([i for i, ci in enumerate(cells) if ci == c])
        r, cc = divmod(int(c), n)
        out[idx] = torch.roll(maps[idx], shifts=(-r * h, -cc * w), dims=(-2, -1))
    return out


def sort_by_localization(scores: Tensor, inside_mass: Tensor) -> Tensor:
    """Indices ordering samples by score (desc), ties by inside mass (desc); stable."""
    scores = torch.as_tensor(scores, dtype=torch.float64).view(-1)
    inside = torch.as_tensor(inside_mass, dtype=torch.float64).view(-1)
    order = torch.argsort(-inside, stable=True)
    order = order[torch.argsort(-scores[order], stable=True)]
    return order


def bin_edges(n: int, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> list[int]:
    """Index boundaries of the percentile bins for ``n`` sorted samples.

    ``round(p/100 * n)``; when ``n`` is at least the number of bins every bin is made
    non-empty (boundaries pushed forward, then clamped so the last bins still fit).
    """
    p = [float(v) for v in percentiles]
    if p[0] != 0 or p[-1] != 100 or any(b <= a for a, b in zip(p, p[1:])):
        raise ValueError("percentiles must increase strictly from 0 to 100")
    edges = [int(round(v / 100.0 * n)) for v in p]
    nb = len(edges) - 1
    if n >= nb:
        for i in range(1, nb):
            edges[i] = max(edges[i], edges[i - 1] + 1)
        for i in range(nb - 1, 0, -1):
            edges[i] = min(edges[i], edges[i + 1] - 1)
    return edges


def aggatt_bins(maps: Tensor, scores: Tensor, inside_mass: Tensor,
                percentiles: Sequence[float] = DEFAULT_PERCENTILES, *,
                positive: bool = True) -> tuple[Tensor, list[tuple[int, int]]]:
    """Mean map per percentile bin.

    Args:
        maps: (N,1,H,W) attribution maps (signed).
        scores: (N,) localization scores.
        inside_mass: (N,) positive attribution inside the target cell (tie breaker).
        percentiles: bin boundaries in percent.
        positive: average the positive parts of the maps (Rao et al. 2022 supp. §H.4, the
            default); ``False`` averages the signed maps.

    Returns:
        ``bin_means`` (nbins,1,H,W) (zeros for an empty bin) and ``bin_ranges`` as
        (start, end) index ranges into the sorted order.
    """
    order = sort_by_localization(scores, inside_mass)
    sorted_maps = maps[order.to(maps.device)]
    if positive:
        sorted_maps = sorted_maps.clamp(min=0)
    edges = bin_edges(maps.shape[0], percentiles)
    means = []
    ranges = []
    for a, b in zip(edges, edges[1:]):
        ranges.append((a, b))
        if b > a:
            means.append(sorted_maps[a:b].double().mean(0))
        else:
            means.append(torch.zeros_like(maps[0], dtype=torch.float64))
    return torch.stack(means).to(maps.dtype), ranges


def bin_median_positions(ranges: Sequence[tuple[int, int]]) -> list[int | None]:
    """Position in the sorted order of each bin's median sample, ``(start + end) // 2`` as in
    the official code's example panels (None for an empty bin)."""
    return [(a + b) // 2 if b > a else None for a, b in ranges]


def bin_scores(scores: Tensor, inside_mass: Tensor, ranges: Sequence[tuple[int, int]]) -> list[dict]:
    """Per bin: count and mean / min / max localization of the samples in it."""
    order = sort_by_localization(scores, inside_mass)
    s = torch.as_tensor(scores, dtype=torch.float64).view(-1)[order]
    out = []
    for a, b in ranges:
        chunk = s[a:b]
        out.append({
            "n_maps": int(b - a),
            "mean_localization": float(chunk.mean()) if b > a else float("nan"),
            "min_localization": float(chunk.min()) if b > a else float("nan"),
            "max_localization": float(chunk.max()) if b > a else float("nan"),
        })
    return out


def aggatt_normaliser(bin_means: Tensor, q: float = 99.5) -> float:
    """One normaliser per method: the ``q``-th percentile over all pixels of all its bins,
    zeros included (the value at sorted index ``floor(N q / 100)``, as the official code's
    value-based threshold); 1.0 when that is not positive."""
    vals = bin_means.clamp(min=0).flatten().double()
    if vals.numel() == 0:
        return 1.0
    k = min(vals.numel() - 1, int(vals.numel() * q / 100.0))
    v = float(torch.sort(vals).values[k])
    return v if v > 0 else 1.0


def aggatt_normalise(bin_means: Tensor, q: float = 99.5) -> Tensor:
    """Positive part of the bin means divided by the method's normaliser, clipped to [0, 1]."""
    return (bin_means.clamp(min=0) / aggatt_normaliser(bin_means, q)).clamp(max=1.0)


def _shrink(maps: Tensor, max_side: int | None) -> Tensor:
    """Average-pool (…,H,W) maps by an integer factor so the longer side is <= ``max_side``."""
    if not max_side:
        return maps
    h, w = maps.shape[-2:]
    f = max(1, -(-max(h, w) // int(max_side)))
    if f == 1:
        return maps
    import torch.nn.functional as F

    shape = maps.shape
    flat = maps.reshape(-1, 1, h, w).float()
    out = F.avg_pool2d(flat, f, ceil_mode=True)
    return out.reshape(*shape[:-2], *out.shape[-2:])


def plot_aggatt(rows: dict[str, Tensor], path: Path, *, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                title: str = "", n: int | None = None, cell: int = 0, style: MosaicStyle = MosaicStyle()) -> Path:
    """Methods x bins grid of normalised bin means (``rows``: label -> (nbins,1,H,W)).

    Each method is normalised once (:func:`aggatt_normalise`) at full resolution, then shown
    average-pooled to at most ``style.max_side`` pixels a side; the scored ``cell`` is outlined."""
    return _plot_rows({k: _shrink(aggatt_normalise(v), style.max_side) for k, v in rows.items()}, path,
                      col_titles=[f"{percentiles[c]:g}-{percentiles[c + 1]:g}%" for c in range(len(percentiles) - 1)],
                      title=title, grid=(n, cell), style=style)


def plot_aggatt_examples(rows: dict[str, Tensor], path: Path, *,
                         percentiles: Sequence[float] = DEFAULT_PERCENTILES, title: str = "",
                         n: int | None = None, cell: int = 0, q: float = 99.5,
                         style: MosaicStyle = MosaicStyle()) -> Path:
    """The paper's example panels: per method (``rows``: label -> (nbins,1,H,W) maps of each
    bin's median sample, :func:`bin_median_positions`), the positive part of each map, each
    normalised by its own ``q``-th percentile (Rao et al. 2022 supp. §H.4)."""
    normed = {k: torch.stack([aggatt_normalise(m[None], q)[0] for m in v]) for k, v in rows.items()}
    return _plot_rows({k: _shrink(v, style.max_side) for k, v in normed.items()}, path,
                      col_titles=[f"median {percentiles[c]:g}-{percentiles[c + 1]:g}%"
                                  for c in range(len(percentiles) - 1)],
                      title=title, grid=(n, cell), style=style)


def _plot_rows(rows: dict[str, Tensor], path: Path, *, col_titles: Sequence[str], title: str,
               grid: tuple[int | None, int], style: MosaicStyle) -> Path:
    """One mosaic image (rows x columns of maps in [0, 1]), drawn with a single ``imshow``:
    fast for many methods and ``style.zoom`` screen pixels per map pixel, so the file stays
    small. ``grid`` = (n, scored cell): the n x n cell lines and the outlined cell (-1: none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from saliencybench.benchmark.report.plots import save_figure

    n, cell = grid
    dpi, zoom, pad = style.dpi, style.zoom, style.pad
    labels = list(rows)
    nb = len(col_titles)
    h, w = (int(v) for v in next(iter(rows.values())).shape[-2:]) if rows else (1, 1)
    ph, pw = h + pad, w + pad
    mosaic = np.full((max(1, len(labels)) * ph - pad, nb * pw - pad), np.nan, dtype=np.float32)
    for r, label in enumerate(labels):
        for c in range(nb):
            mosaic[r * ph:r * ph + h, c * pw:c * pw + w] = rows[label][c, 0].float().cpu().numpy()
    label_in, title_in, head_in = 1.7, (0.35 if title else 0.0), 0.2
    img_w, img_h = mosaic.shape[1] * zoom / dpi, mosaic.shape[0] * zoom / dpi
    fig_w, fig_h = label_in + img_w + 0.1, title_in + head_in + img_h + 0.1
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((label_in / fig_w, 0.1 / fig_h, img_w / fig_w, img_h / fig_h))
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    lines = []
    for r in range(len(labels)):
        for c in range(nb):
            y0, x0 = r * ph - 0.5, c * pw - 0.5
            if n:
                for k in range(1, n):
                    lines.append(([x0, x0 + w], [y0 + k * h / n, y0 + k * h / n]))
                    lines.append(([x0 + k * w / n, x0 + k * w / n], [y0, y0 + h]))
    for xs, ys in lines:
        ax.plot(xs, ys, color="white", lw=0.3, alpha=0.6)
    if n and cell >= 0:
        rr, cc = divmod(int(cell), n)
        for r in range(len(labels)):
            for c in range(nb):
                y0, x0 = r * ph - 0.5 + rr * h / n, c * pw - 0.5 + cc * w / n
                ax.plot([x0, x0 + w / n, x0 + w / n, x0, x0], [y0, y0, y0 + h / n, y0 + h / n, y0],
                        color="deepskyblue", lw=0.6)
    ax.set_xlim(-0.5, mosaic.shape[1] - 0.5)
    ax.set_ylim(mosaic.shape[0] - 0.5, -0.5)
    for r, label in enumerate(labels):
        fig.text((label_in - 0.05) / fig_w, 1 - (title_in + head_in + (r * ph + h / 2) * zoom / dpi) / fig_h,
                 label, fontsize=6, ha="right", va="center")
    for c, t in enumerate(col_titles):
        fig.text((label_in + (c * pw + w / 2) * zoom / dpi) / fig_w, 1 - (title_in + head_in / 2) / fig_h,
                 t, fontsize=5.5, ha="center", va="center")
    if title:
        fig.text(0.5, 1 - 0.15 / fig_h, title, fontsize=8, ha="center", va="center")
    return save_figure(fig, Path(path), dpi=dpi, tight=False)
