"""The conservation report: a scatter of relevance sums against the initial relevance per
(dataset, model), like Otsuki et al. 2024 Fig. 7, from the curves that the ``conservation_error``
metric (:mod:`saliencybench.metrics.conservation`) stores: step 0 = the initial relevance,
steps 1-3 = the relevance sums at (input, first_block, last_block).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from saliencybench.benchmark.report.plots import save_figure
from saliencybench.benchmark.results import read_curves
from saliencybench.core.io import safe_filename
from saliencybench.core.types import MetricOutput
from saliencybench.metrics.conservation import CHECKPOINTS


def conservation_report(results_dir: Path, scores: pd.DataFrame, cache: Any, *, metric_class: type | None = None
                        ) -> list[Path]:
    """One Fig. 7-like scatter per (dataset, model) from the stored sums:
    ``figures/conservation_<dataset>_<model>.png``."""
    df = rows_from_curves(read_curves(Path(results_dir)))
    paths = []
    for (ds, model), g in df.groupby(["dataset", "model"], sort=True):
        paths.append(conservation_figure(g, Path(results_dir) / "figures" /
                                         f"conservation_{safe_filename(ds)}_{safe_filename(model)}.png"))
    return paths


def rows_from_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """(method, checkpoint, relevance_sum, probability) rows from stored ``curves.csv`` rows."""
    c = curves[curves["metric"] == "conservation_error"]
    if c.empty:
        return pd.DataFrame(columns=["dataset", "model", "method", "checkpoint", "relevance_sum", "probability"])
    wide = c.pivot_table(index=["dataset", "model", "method", "sample_id"], columns="step", values="value",
                         aggfunc="first")
    frames = []
    for step, cp in enumerate(CHECKPOINTS, start=1):
        if step not in wide.columns:
            continue
        frames.append(pd.DataFrame({"checkpoint": cp, "relevance_sum": wide[step], "probability": wide[0]})
                      .reset_index())
    df = pd.concat(frames, ignore_index=True)
    return df[df["relevance_sum"].notna()]


def figure_rows(method: str, out: MetricOutput) -> pd.DataFrame:
    """Long DataFrame (method, checkpoint, relevance_sum, probability) from one MetricOutput."""
    p = out.extra["probability"].detach().cpu().numpy()
    frames = []
    for k, s in out.extra["relevance_sum"].items():
        s = s.detach().cpu().numpy()
        frames.append(pd.DataFrame({"method": method, "checkpoint": k, "relevance_sum": s, "probability": p}))
    df = pd.concat(frames, ignore_index=True)
    return df[df["relevance_sum"].notna()]


def conservation_figure(df: pd.DataFrame, out_png: str | Path) -> Path:
    """Otsuki et al. 2024 Fig. 7-like scatter: relevance sum (x) against predicted probability (y).

    ``df`` needs the columns ``method``, ``checkpoint`` (input / first_block / last_block),
    ``relevance_sum`` and ``probability`` (the initial relevance: p(y_c), or f(x)-f(x') for
    completeness methods). One panel per checkpoint, one colour per method, and the
    diagonal ``p = sum R`` on which every point of a conservative method lies.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    cps = [c for c in CHECKPOINTS if c in set(df["checkpoint"])] or sorted(set(df["checkpoint"]))
    titles = {"input": "(a) input", "first_block": "(b) first block input",
              "last_block": "(c) last block input"}
    fig, axes = plt.subplots(1, len(cps), figsize=(4 * len(cps), 4), squeeze=False)
    for ax, cp in zip(axes[0], cps):
        sub = df[df["checkpoint"] == cp]
        for method, g in sub.groupby("method"):
            ax.scatter(g["relevance_sum"], g["probability"], s=10, alpha=0.7, label=method)
        if len(sub):
            lo = float(min(sub["relevance_sum"].min(), sub["probability"].min()))
            hi = float(max(sub["relevance_sum"].max(), sub["probability"].max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(titles.get(cp, cp))
        ax.set_xlabel("sum of relevance")
        ax.set_ylabel("predicted probability")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=120, tight=False)
