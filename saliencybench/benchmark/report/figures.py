"""After a run: figures, metric report hooks (AggAtt, Spearman, conservation, ...), leaderboard."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from saliencybench.benchmark.report.leaderboard import render_markdown
from saliencybench.benchmark.report.plots import curve_figures, distribution_figures
from saliencybench.benchmark.store import AttributionCache, read_curves, read_scores
from saliencybench.core.io import atomic_write_text
from saliencybench.core.registry import METRICS


def make_figures(results_dir: Path, *, metric_bases: dict[str, str] | None = None) -> list[Path]:
    """Generic figures plus every metric class's ``report`` hook; returns the PNG/CSV paths."""
    results_dir = Path(results_dir)
    fig_dir = results_dir / "figures"
    scores = read_scores(results_dir)
    curves = read_curves(results_dir)
    bases = metric_bases or {}
    series = [m for m in curves["metric"].unique()
              if bases.get(m, m) not in METRICS or getattr(METRICS.get(bases.get(m, m)).obj, "plot_curve", True)]
    paths = curve_figures(curves[curves["metric"].isin(series)], fig_dir) + distribution_figures(scores, fig_dir)
    seen: set[type] = set()
    cache = AttributionCache(results_dir / "cache")
    for metric in sorted(scores["metric"].unique()):
        base = (metric_bases or {}).get(metric, metric)
        if base not in METRICS:
            continue
        cls = METRICS.get(base).obj
        if cls in seen:
            continue
        seen.add(cls)
        try:
            paths += list(cls.report(results_dir, scores, cache) or [])
        except Exception as e:  # a figure must never lose a finished run
            print(f"warning: report of metric '{metric}' failed: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc(limit=2, file=sys.stderr)
    qual = sorted(fig_dir.glob("qualitative_*.png"))
    return sorted(set(paths) | set(qual))


def write_leaderboard(results_dir: Path, out_path: Path, figures: list[Path] | None = None) -> Path:
    figs = [p for p in (figures or sorted((Path(results_dir) / "figures").glob("*.png"))) if str(p).endswith(".png")]
    text = render_markdown(Path(results_dir), out_path=out_path, figures=figs)
    atomic_write_text(Path(out_path), text)
    return Path(out_path)
