"""After a run: generic figures, the metric reports (localization with AggAtt and Spearman,
conservation, ...) and the leaderboard.

Metrics do not draw: :data:`METRIC_REPORTS` maps a metric class to the function that writes its
figures and tables, ``fn(results_dir, scores, cache, *, metric_class) -> list[Path]``, where
``scores`` has the columns suite, dataset, model, method, metric, sample_id, value, status and
``cache.load(dataset, model, method) -> (sample_ids, maps (N,1,H,W))``. A subclass of a mapped
class uses its parent's report; :func:`register_report` adds one for a user's metric class.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from saliencybench.benchmark.report.conservation import conservation_report
from saliencybench.benchmark.report.leaderboard import measurement_plan, metric_directions, render_markdown
from saliencybench.benchmark.report.localization import localization_report
from saliencybench.benchmark.report.plots import curve_figures, distribution_figures
from saliencybench.benchmark.report.randomisation import randomisation_figures
from saliencybench.benchmark.report.significance import critical_difference_figure
from saliencybench.benchmark.results import load_results, read_curves, read_scores
from saliencybench.benchmark.store import AttributionCache
from saliencybench.core.io import atomic_write_text
from saliencybench.core.registry import METRICS
from saliencybench.metrics.conservation import ConservationError
from saliencybench.metrics.localization import Localization
from saliencybench.metrics.randomisation import ModelRandomisation

ReportFn = Callable[..., "list[Path]"]



def randomisation_report(results_dir: Path, scores: pd.DataFrame, cache: Any, *, metric_class: type) -> list[Path]:
    """Similarity per randomised layer, one figure per (dataset, model, metric) (Adebayo et al.
    2018, Fig. 2 / Fig. 4)."""
    return randomisation_figures(read_curves(Path(results_dir)), Path(results_dir) / "figures")


#: metric class -> report writer (looked up along the class's MRO)
METRIC_REPORTS: dict[type, ReportFn] = {
    Localization: localization_report,
    ConservationError: conservation_report,
    ModelRandomisation: randomisation_report,
}


def register_report(metric_class: type) -> Callable[[ReportFn], ReportFn]:
    """Decorator: ``fn`` writes the report of ``metric_class`` (and of its subclasses)."""

    def wrap(fn: ReportFn) -> ReportFn:
        METRIC_REPORTS[metric_class] = fn
        return fn

    return wrap


def report_for(metric_class: type) -> ReportFn | None:
    """The report writer of ``metric_class``: its own, else the nearest parent's, else None."""
    for klass in metric_class.__mro__:
        if klass in METRIC_REPORTS:
            return METRIC_REPORTS[klass]
    return None


def make_figures(results_dir: Path, *, metric_bases: dict[str, str] | None = None) -> list[Path]:
    """Generic figures plus the report of every metric class of the run (:data:`METRIC_REPORTS`);
    returns the PNG/CSV paths."""
    results_dir = Path(results_dir)
    fig_dir = results_dir / "figures"
    scores = read_scores(results_dir)
    curves = read_curves(results_dir)
    bases = metric_bases or {}
    series = [m for m in curves["metric"].unique()
              if bases.get(m, m) not in METRICS or getattr(METRICS.get(bases.get(m, m)).obj, "plot_curve", True)]
    paths = curve_figures(curves[curves["metric"].isin(series)], fig_dir) + distribution_figures(scores, fig_dir)
    paths += _metric_reports(results_dir, scores, bases) + significance_figures(results_dir)
    qual = sorted(fig_dir.glob("qualitative_*.png"))
    return sorted(set(paths) | set(qual))


def _metric_reports(results_dir: Path, scores: pd.DataFrame, bases: dict[str, str]) -> list[Path]:
    """Each metric class's report (:func:`report_for`) once; a failing report only warns."""
    paths: list[Path] = []
    seen: set[type] = set()
    cache: Any = AttributionCache(results_dir / "cache")
    for metric in sorted(scores["metric"].unique()):
        base = bases.get(metric, metric)
        if base not in METRICS:
            continue
        cls = METRICS.get(base).obj
        if cls in seen:
            continue
        seen.add(cls)
        report = report_for(cls)
        if report is None:
            continue
        try:
            paths += list(report(results_dir, scores, cache, metric_class=cls) or [])
        except Exception as e:  # a figure must never lose a finished run
            print(f"warning: report of metric '{metric}' failed: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc(limit=2, file=sys.stderr)
    return paths


def significance_figures(results_dir: Path) -> list[Path]:
    """The critical-difference diagram (Demšar 2006, Sec. 3.2.2, Fig. 1; Nemenyi) over the
    (dataset, model, metric) blocks of a run, one metric per distinct measurement of the overall
    rank (:func:`~saliencybench.benchmark.report.leaderboard.measurement_plan`); none when fewer
    than two methods are common to the blocks."""
    res = load_results(Path(results_dir), curves=False)
    metrics = sorted(res.scores["metric"].unique())
    counted, _, _ = measurement_plan(res.manifest, metrics)
    scores = res.scores[res.scores["metric"].isin(sorted(set(counted.values())))]
    try:
        return [critical_difference_figure(scores, metric_directions(res.manifest, metrics),
                                           Path(results_dir) / "figures" / "critical_difference.png")]
    except ValueError as e:  # fewer than two methods in every block
        print(f"note: no critical-difference diagram: {e}", file=sys.stderr)
        return []


def write_leaderboard(results_dir: Path, out_path: Path, figures: list[Path] | None = None) -> Path:
    figs = [p for p in (figures or sorted((Path(results_dir) / "figures").glob("*.png"))) if str(p).endswith(".png")]
    text = render_markdown(Path(results_dir), out_path=out_path, figures=figs)
    atomic_write_text(Path(out_path), text)
    return Path(out_path)
