"""Figures generated from results (PNG, linked from the leaderboard).

- mean perturbation / MIA curves per method with 95% bands (normal approximation of the
  mean's CI), one panel per curve metric;
- per-method score distributions (box plots) per metric.

The qualitative grid (images x methods) is in :mod:`saliencybench.benchmark.report.qualitative`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from saliencybench.core.io import atomic_write_bytes
from saliencybench.core.io import safe_filename as _safe  # noqa: E402


def save_figure(fig, path: Path, *, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` as a screen-sized palette PNG and close it.

    Every figure of the package goes through here, so committed results stay lean: the
    rendered RGB image is reduced to an adaptive palette of at most 256 colours without
    dithering (a colormap has 256 entries, so a map keeps its colours; plots lose nothing
    visible) at about a third of the bytes, and no time stamp or software tag is stored.
    """
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    img = Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    path = Path(path)
    atomic_write_bytes(path, out.getvalue())
    return path


def _palette(methods: Sequence[str]) -> dict[str, tuple]:
    colors = sns.color_palette("tab20", n_colors=max(len(methods), 1))
    return {m: colors[i] for i, m in enumerate(sorted(methods))}


def curve_figures(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One figure per (dataset, model): mean curve per method with a 95% band, per metric."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if curves.empty:
        return paths
    curves = curves[np.isfinite(curves["value"].astype(float))]
    for (ds, model), g in curves.groupby(["dataset", "model"], sort=True):
        metrics = sorted(g["metric"].unique())
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
        pal = _palette(g["method"].unique())
        for ax, met in zip(axes[0], metrics):
            sub = g[g["metric"] == met]
            stats = sub.groupby(["method", "step"]).agg(x=("x", "first"), mean=("value", "mean"),
                                                          sd=("value", "std"), n=("value", "size")).reset_index()
            for method, s in stats.groupby("method", sort=True):
                half = 1.96 * s["sd"].fillna(0) / np.sqrt(s["n"].clip(lower=1))
                ax.plot(s["x"], s["mean"], label=method, color=pal[method], lw=1.4)
                ax.fill_between(s["x"], s["mean"] - half, s["mean"] + half, color=pal[method], alpha=0.15, lw=0)
            ax.set_title(met)
            ax.set_xlabel("iteration" if met == "mia" else "fraction of pixels")
            ax.set_ylabel("accuracy" if met == "mia" else "score")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{ds} / {model}: mean curves (bands: 95% CI of the mean)", fontsize=10)
        p = out_dir / f"curves_{_safe(ds)}_{_safe(model)}.png"
        save_figure(fig, p)
        paths.append(p)
    return paths


def distribution_figures(scores: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Box plots of per-sample scores, one panel per metric, per (dataset, model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = scores[(scores["status"] == "ok") & np.isfinite(scores["value"].astype(float))]
    paths = []
    for (ds, model), g in ok.groupby(["dataset", "model"], sort=True):
        metrics = sorted(g["metric"].unique())
        fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.6, 0.45 * g["method"].nunique()) * len(metrics), 3.8),
                                 squeeze=False)
        for ax, met in zip(axes[0], metrics):
            sub = g[g["metric"] == met]
            order = sub.groupby("method")["value"].mean().sort_values(ascending=False).index.tolist()
            sns.boxplot(data=sub, x="method", y="value", order=order, ax=ax, fliersize=1.5, linewidth=0.8,
                        color="#9ecae1")
            ax.set_title(met)
            ax.set_xlabel("")
            ax.tick_params(axis="x", rotation=70, labelsize=7)
        fig.suptitle(f"{ds} / {model}: per-sample score distributions", fontsize=10)
        p = out_dir / f"distributions_{_safe(ds)}_{_safe(model)}.png"
        save_figure(fig, p)
        paths.append(p)
    return paths
