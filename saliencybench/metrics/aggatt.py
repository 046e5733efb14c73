"""AggAtt: aggregate attribution maps per localization percentile bin.

Rao, Böhle & Schiele 2022, main paper §3.2 and supplement §H.4: maps are sorted by
localization score in descending order (ties broken by the positive attribution inside the
target cell, the numerator of Eq. 2, also descending), split into bins at the percentiles
[0, 2, 5, 50, 95, 98, 100], and averaged per bin. The bin means of one method share a single
normaliser (here the 99.5th percentile of their positive values) so that strength is
comparable across bins (supp. §H.4).

:func:`aggatt_bins` and :func:`aggatt_normalise` are pure; :func:`plot_aggatt` draws a
methods x bins figure (like 003 Fig. 12) on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

DEFAULT_PERCENTILES: tuple[float, ...] = (0, 2, 5, 50, 95, 98, 100)


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
                percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> tuple[Tensor, list[tuple[int, int]]]:
    """Mean map per percentile bin.

    Args:
        maps: (N,1,H,W) attribution maps (signed; the caller decides what to display).
        scores: (N,) localization scores.
        inside_mass: (N,) positive attribution inside the target cell (tie breaker).
        percentiles: bin boundaries in percent.

    Returns:
        ``bin_means`` (nbins,1,H,W) (zeros for an empty bin) and ``bin_ranges`` as
        (start, end) index ranges into the sorted order.
    """
    order = sort_by_localization(scores, inside_mass)
    sorted_maps = maps[order.to(maps.device)]
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
    """One normaliser per method: the ``q``-th percentile of the positive bin-mean values."""
    pos = bin_means.clamp(min=0).flatten().double()
    pos = pos[pos > 0]
    if pos.numel() == 0:
        return 1.0
    v = float(torch.quantile(pos, q / 100.0)) if pos.numel() < 16_000_000 else float(pos.max())
    return v if v > 0 else 1.0


def aggatt_normalise(bin_means: Tensor, q: float = 99.5) -> Tensor:
    """Positive part of the bin means divided by the method's normaliser, clipped to [0, 1]."""
    return (bin_means.clamp(min=0) / aggatt_normaliser(bin_means, q)).clamp(max=1.0)


def plot_aggatt(rows: dict[str, Tensor], path: Path, *, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                title: str = "", n: int | None = None) -> Path:
    """Methods x bins grid of normalised bin means (``rows``: label -> (nbins,1,H,W))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saliencybench.benchmark.plots import save_figure

    labels = list(rows)
    nb = len(percentiles) - 1
    fig, axes = plt.subplots(len(labels), nb, figsize=(1.3 * nb + 1.6, 1.3 * len(labels) + 0.6),
                             squeeze=False)
    for r, label in enumerate(labels):
        norm = aggatt_normalise(rows[label])
        for c in range(nb):
            ax = axes[r, c]
            ax.imshow(norm[c, 0].cpu().numpy(), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            if n:
                h, w = norm.shape[-2:]
                for k in range(1, n):
                    ax.axhline(k * h / n - 0.5, color="white", lw=0.4, alpha=0.6)
                    ax.axvline(k * w / n - 0.5, color="white", lw=0.4, alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{percentiles[c]:g}-{percentiles[c + 1]:g}%", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    top = 1.0
    if title:  # 0.15 inch from the top edge, with 0.45 inch kept free above the bin titles
        height = fig.get_figheight()
        fig.suptitle(title, fontsize=9, y=1 - 0.15 / height, va="top")
        top = 1 - 0.45 / height
    fig.tight_layout(rect=(0, 0, 1, top))
    return save_figure(fig, Path(path), dpi=80, tight=False)
