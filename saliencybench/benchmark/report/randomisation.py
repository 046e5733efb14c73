"""The cascading-randomisation figure of Adebayo et al. 2018 (NeurIPS, "Sanity Checks for Saliency
Maps", Sec. 3.1, Fig. 2 right): similarity between the maps of the trained model and of its
randomised copies against the layers randomised so far, one line per method, a band of the 95%
confidence interval of the mean over samples (normal approximation).

Input: the long-format curves of a run (columns suite, dataset, model, method, metric,
sample_id, step, x, value); rows of the randomisation metrics are selected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from saliencybench.benchmark.report.plots import save_figure  # noqa: E402
from saliencybench.core.io import safe_filename  # noqa: E402

RANDOMISATION_METRICS = ("randomisation_cascading", "randomisation_independent")


def _draw(ax: plt.Axes, block: pd.DataFrame, layers: Sequence[str] | None) -> None:
    colors = plt.get_cmap("tab20")
    stats = block.groupby(["method", "step"]).agg(x=("x", "first"), mean=("value", "mean"),
                                                   sd=("value", "std"), n=("value", "size")).reset_index()
    for i, (method, s) in enumerate(stats.groupby("method", sort=True)):
        half = 1.96 * s["sd"].fillna(0) / np.sqrt(s["n"].clip(lower=1))
        ax.plot(s["x"], s["mean"], marker="o", ms=2.5, lw=1.3, label=method, color=colors(i % 20))
        ax.fill_between(s["x"], s["mean"] - half, s["mean"] + half, color=colors(i % 20), alpha=0.12, lw=0)
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("similarity to the original maps")
    ax.grid(alpha=0.3)
    if layers:
        ax.set_xticks(np.arange(1, len(layers) + 1))
        ax.set_xticklabels(layers, rotation=70, fontsize=6)
        ax.set_xlabel("randomised layer")
    else:
        ax.set_xlabel("layers randomised (from the top)")


def randomisation_figures(curves: pd.DataFrame, out_dir: Path, *,
                          layers: Mapping[str, Sequence[str]] | None = None,
                          metrics: Sequence[str] = RANDOMISATION_METRICS) -> list[Path]:
    """One figure per (dataset, model, metric) of ``metrics`` found in ``curves``.

    ``layers`` maps a model name to its randomised layers in ``named_modules`` order (bottom-up, as
    :func:`saliencybench.metrics.randomisation.randomisable_layers` lists them); the figure puts
    them in each metric's order (top-down for cascading) as tick labels. Without it the axis
    counts layers.
    Returns the paths written (``randomisation_<metric>_<dataset>_<model>.png`` in ``out_dir``).
    """
    rows = curves[curves["metric"].isin(list(metrics))] if len(curves) else curves
    if not len(rows):
        return []
    rows = rows[np.isfinite(rows["value"].astype(float))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (ds, model, metric), block in rows.groupby(["dataset", "model", "metric"], sort=True):
        fig, ax = plt.subplots(figsize=(max(5.0, 0.18 * block["step"].nunique() + 3.0), 3.8))
        kind = "cascading" if "cascading" in metric else "independent"
        names = (layers or {}).get(model)
        _draw(ax, block, None if names is None else list(reversed(names)) if kind == "cascading" else list(names))
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        ax.set_title(f"{ds} / {model}: {kind} randomisation ({metric})", fontsize=9)
        name = f"randomisation_{safe_filename(metric)}_{safe_filename(ds)}_{safe_filename(model)}.png"
        paths.append(save_figure(fig, out_dir / name, dpi=80))  # line plots: screen-sized at 80 dpi
    return paths
