"""Leaderboard generation from a results directory (never written by hand).

One table per (dataset, model): methods as rows, metrics as columns with their direction
(↑ higher is better, ↓ lower is better), mean and 95% bootstrap CI, best in bold, per-metric
rank, and an overall rank. Rows are sorted by ID score when the suite has it, else by overall
rank. Cells a method has no value for stay empty. Where the suite config lists a paper's number,
a "paper reports" table puts it beside ours.

Overall rank: the mean of a method's ranks over the *distinct measurements* of the run, each
counted once (:func:`measurement_plan`). Which metrics are one measurement is read from the
run's metric parameters (run.json, else the suite config) through each metric class's
``measurement_key`` / ``components``, never from metric names:

- metrics identical by construction (equal keys; e.g. LeRF and Insertion, MoRF and Deletion on
  one substrate with the same steps, ties and target: Jeon et al. 2022 supp. §G flips the
  pixels that Otsuki et al. 2024 supp. Eq. 9-10 insert or delete) form one measurement, with
  the mean of their (equal) ranks;
- a derived metric (ID score = Insertion - Deletion, Otsuki et al. 2024 §5; the LeRF-MoRF gap)
  does not count where the run measures every metric it is computed from: Insertion and
  Deletion already count once each, with equal weight, and ranking the difference as well would
  count each of them a second time. Where a component is missing, the derived metric counts.
  ID score still orders the rows.

A note under the introduction names the identical and the derived columns of the run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saliencybench.benchmark.aggregate import aggregate, overall_rank
from saliencybench.benchmark.report.significance import not_worse_than_best
from saliencybench.benchmark.results import load_results

ARROW = {True: "↑", False: "↓"}

LEGEND = (
    "Each cell is the mean over samples ± half the width of its 95% percentile-bootstrap "
    "confidence interval (1000 resamples). ↑ higher is better, ↓ lower is better; the best "
    "mean per column is **bold**; `(r)` is the method's rank on that metric. *Overall* is the "
    "mean of a method's ranks over the distinct measurements it has, each counted once "
    "(its count in brackets when it lacks some): metrics identical by construction count "
    "once, and a difference of two counted metrics (such as the ID score) does not count. Rows are "
    "sorted by ID score where the suite has it, else by overall rank. "
    "Empty cells: the metric does not apply to the method. † not significantly worse than the "
    "column's best: two-sided Wilcoxon signed-rank test of the paired per-sample differences, "
    "Holm-corrected over all pairs of methods of the column, α = 0.05 (Demšar 2006, Sec. 3.1.3, 3.2.2)."
)


def metric_directions(manifest: dict[str, Any], metrics: list[str]) -> dict[str, bool]:
    from saliencybench.core.registry import METRICS

    out = {}
    for m in metrics:
        info = manifest.get("metrics", {}).get(m, {})
        if "higher_is_better" in info:
            out[m] = bool(info["higher_is_better"])
        else:  # no run.json record: the config's parameters, then the registry
            params = dict(manifest.get("config", {}).get("metrics", {}).get(m, {}))
            base = params.pop("base", m)
            if base not in METRICS:
                out[m] = True
                continue
            entry = METRICS.get(base)
            own = entry.obj.direction({**dict(entry.meta.get("defaults", {})), **params}) \
                if hasattr(entry.obj, "direction") else None
            out[m] = bool(entry.meta["higher_is_better"]) if own is None else bool(own)
    return out


def _metric_class_and_record(manifest: dict[str, Any], metric: str) -> tuple[type | None, dict[str, Any]]:
    """The registered class of ``metric`` and its parameter record (run.json, else the config)."""
    from saliencybench.core.registry import METRICS

    cfg_params = dict(manifest.get("config", {}).get("metrics", {}).get(metric, {}))
    base = str(cfg_params.pop("base", metric))
    entry = METRICS.get(base) if base in METRICS else None
    record = manifest.get("metrics", {}).get(metric)
    if record is None:
        if entry is None:
            return None, {}
        record = {**dict(entry.meta.get("defaults", {})), **cfg_params}
    return (entry.obj if entry is not None else None), dict(record)


def measurement_plan(manifest: dict[str, Any],
                     metrics: list[str]) -> tuple[dict[str, str], list[list[str]], dict[str, list[str]]]:
    """Which metrics of a run count in the overall rank, and as which measurement.

    Returns ``(counted, identical, derived)``: ``counted`` maps each counted metric to the
    first metric (in table order) of its group of identical ones; ``identical`` lists the
    groups with more than one metric; ``derived`` maps each left-out derived metric to the
    metrics it is computed from. See the module docstring for the rule.
    """
    metrics = _order(list(metrics), manifest)
    keys: dict[str, Any] = {}
    comps: dict[str, tuple] = {}
    for m in metrics:
        cls, record = _metric_class_and_record(manifest, m)
        key, parts = None, ()
        if cls is not None and hasattr(cls, "measurement_key"):
            try:
                key, parts = cls.measurement_key(record), tuple(cls.components(record))
            except Exception:  # an unreadable record: count the metric on its own
                key, parts = None, ()
        keys[m], comps[m] = key, parts
    first: dict[Any, str] = {}
    label: dict[str, str] = {}
    for m in metrics:
        label[m] = m if keys[m] is None else first.setdefault(keys[m], m)
    identical = [[m for m in metrics if label[m] == lab] for lab in dict.fromkeys(label.values())]
    identical = [g for g in identical if len(g) > 1]
    counted: dict[str, str] = {}
    derived: dict[str, list[str]] = {}
    for m in metrics:
        if comps[m] and all(c in first for c in comps[m]):
            derived[m] = [first[c] for c in comps[m]]
        else:
            counted[m] = label[m]
    return counted, identical, derived


def build_tables(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    res = load_results(results_dir, curves=False)
    agg, ranks = tables_from_scores(res.scores, res.manifest)
    return agg, ranks, res.manifest


def tables_from_scores(scores: pd.DataFrame, manifest: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Aggregate (mean, CI, rank per metric) and overall ranks (each distinct measurement
    counted once, :func:`measurement_plan`) of a long-format scores table."""
    metrics = sorted(scores["metric"].unique())
    directions = metric_directions(manifest, metrics)
    agg = aggregate(scores, directions, seed=int(manifest.get("seed", 0)))
    counted, _, _ = measurement_plan(manifest, metrics)
    return agg, overall_rank(agg, counted)


def plan_note(manifest: dict[str, Any], metrics: list[str]) -> list[str]:
    counted, identical, derived = measurement_plan(manifest, metrics)
    if not identical and not derived:
        return []
    parts = []
    if identical:
        parts.append("Identical by construction (same perturbed images and parameters in run.json), "
                     "counted once in *overall*: "
                     + "; ".join(" = ".join(f"`{m}`" for m in g) for g in identical) + ".")
    if derived:
        parts.append("Derived from columns counted already, not counted in *overall*: "
                     + "; ".join(f"`{m}` (from {', '.join(f'`{c}`' for c in cs)})" for m, cs in derived.items())
                     + ".")
    distinct = list(dict.fromkeys(counted.values()))
    parts.append(f"*Overall* averages {len(distinct)} distinct measurements: "
                 + ", ".join(f"`{m}`" for m in distinct) + ".")
    return [" ".join(parts), ""]


def _paper_measured(p: dict[str, Any], cell: pd.DataFrame, scores: pd.DataFrame, ds: str, model: str,
                    metrics: list[str]) -> float:
    """Our value for a ``[[paper]]`` row: the mean of its metric, or, for a row with ``versus``
    (a Spearman coefficient between two methods, Rao et al. 2022 supp. §C, Tables 1-2), the
    Spearman correlation of the two methods' per-sample scores on metric ``of`` (default: the
    table's only metric), over the samples both have."""
    if "versus" not in p:
        return float(cell["mean"].get((p["method"], p["metric"]), np.nan))
    from saliencybench.benchmark.report.spearman import spearman_versus

    of = p.get("of") or (metrics[0] if len(metrics) == 1 else None)
    if of is None:
        return float("nan")
    sub = scores[(scores["dataset"] == ds) & (scores["model"] == model) & (scores["metric"] == of)
                 & (scores["status"] == "ok")]
    return spearman_versus(sub, p["method"], p["versus"])


def _fmt(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return ""
    half = (hi - lo) / 2 if np.isfinite(lo) and np.isfinite(hi) else float("nan")
    spec = ".2e" if mean != 0 and abs(mean) < 1e-3 else ".3f"  # e.g. conservation errors ~1e-7
    return f"{mean:{spec}} ± {half:{spec}}" if np.isfinite(half) else f"{mean:{spec}}"


def _order(metrics: list[str], manifest: dict[str, Any]) -> list[str]:
    listed = manifest.get("config", {}).get("suite", {}).get("metrics", [])
    first = [m for m in listed if m in metrics]
    return first + sorted(m for m in metrics if m not in first)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def render_markdown(results_dir: Path, *, out_path: Path | None = None, figures: list[Path] | None = None) -> str:
    """The leaderboard of a results directory as markdown (links relative to ``out_path``)."""
    results_dir = Path(results_dir)
    res = load_results(results_dir, curves=False)
    manifest, scores = res.manifest, res.scores
    agg, ranks = tables_from_scores(scores, manifest)
    base = (out_path or results_dir / "leaderboard.md").resolve().parent
    lines = _intro(results_dir, manifest, base) + plan_note(manifest, sorted(agg["metric"].unique()))
    lines += _run_line(results_dir, manifest, base)
    lines += markdown_tables(agg, ranks, manifest, scores)
    figs = figures if figures is not None else sorted((results_dir / "figures").glob("*.png"))
    lines += _figure_links(figs, base) + _cost_section(manifest)
    return "\n".join(lines).rstrip() + "\n"


def _intro(results_dir: Path, manifest: dict[str, Any], base: Path) -> list[str]:
    suite = manifest.get("suite", results_dir.name)
    return [
        f"# Leaderboard: suite `{suite}`",
        "",
        f"Generated by `saliencybench leaderboard` from `{_rel(results_dir.resolve() / 'scores.csv', base)}`; "
        "do not edit by hand.",
        "",
        LEGEND,
        "",
    ]


def _run_line(results_dir: Path, manifest: dict[str, Any], base: Path) -> list[str]:
    if not manifest:
        return []
    env = manifest.get("environment", {})
    return [
        f"Run: seed {manifest.get('seed')}, device `{manifest.get('device')}`, "
        f"torch {env.get('torch', '?')}, saliencybench {env.get('saliencybench', '?')}; "
        f"manifest: `{_rel(results_dir.resolve() / 'run.json', base)}`.",
        "",
    ]


def _figure_links(figs: list[Path], base: Path) -> list[str]:
    if not figs:
        return []
    return ["## Figures", ""] + [f"- [{Path(f).stem}]({_rel(Path(f).resolve(), base)})" for f in figs] + [""]


def _cost_section(manifest: dict[str, Any]) -> list[str]:
    timings = manifest.get("timings", {})
    if not timings.get("attribution_seconds"):
        return []
    lines = ["## Cost of this run", "",
             "Wall time of the run that produced these results (machine-dependent; the "
             "scores above are not), and forward passes per metric.", "",
             f"Total: {timings.get('total_seconds', 0):.1f} s on `{manifest.get('device')}`."]
    fw = manifest.get("forward_passes", {})
    if fw:
        lines += ["", "Forward passes (images through the model): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(fw.items())) + "."]
    return lines + [""]


def _method_order(g: pd.DataFrame, metrics: list[str], r: pd.DataFrame) -> list[str]:
    """Rows by ID score where the table has it, else by overall rank."""
    methods = sorted(g["method"].unique())
    cell = g.set_index(["method", "metric"])
    if "id_score" in metrics:
        key = {m: -(cell["mean"].get((m, "id_score"), np.nan)) for m in methods}
        methods.sort(key=lambda m: (np.nan_to_num(key[m], nan=np.inf), m))
    else:
        methods.sort(key=lambda m: (r["mean_rank"].get(m, np.inf), m))
    return methods


def _best(g: pd.DataFrame, metrics: list[str]) -> dict[str, float]:
    best = {}
    for met in metrics:
        sub = g[g["metric"] == met]
        if sub["mean"].notna().any():
            hib = bool(sub["higher_is_better"].iloc[0])
            best[met] = sub["mean"].max() if hib else sub["mean"].min()
    return best


def not_worse_marks(scores: pd.DataFrame, directions: dict[str, bool]) -> set[tuple[str, str, str, str]]:
    """(dataset, model, metric, method) of the methods that are not the best of their column and
    not significantly worse than it (Wilcoxon signed-rank, Holm over the column's pairs, α = 0.05;
    :func:`~saliencybench.benchmark.report.significance.not_worse_than_best`)."""
    marks: set[tuple[str, str, str, str]] = set()
    for (ds, model, metric), block in scores.groupby(["dataset", "model", "metric"], sort=True):
        ok = block[(block["status"] == "ok") & np.isfinite(block["value"].astype(float))]
        if ok["method"].nunique() < 2:
            continue
        table = not_worse_than_best(ok, higher_is_better=directions.get(metric, True))
        for row in table.itertuples():
            if row.not_worse and not row.best:
                marks.add((ds, model, metric, row.method))
    return marks


def _cell_text(c: pd.Series, best: float, mark: bool = False) -> str:
    txt = _fmt(c["mean"], c["ci_low"], c["ci_high"])
    if txt and np.isfinite(c["mean"]) and math.isclose(c["mean"], best, rel_tol=0, abs_tol=1e-12):
        txt = f"**{txt}**"
    elif txt and mark:
        txt += " †"
    if txt and np.isfinite(c["rank"]):
        txt += f" ({int(c['rank'])})"
    if c["n_rejected"]:
        txt += f" ⚠{int(c['n_rejected'])}"
    return txt


def _overall_text(r: pd.DataFrame, m: str, n_distinct: int) -> str:
    if m not in r.index:
        return ""
    n_m = int(r.loc[m, "n_metrics"])
    return f"{r.loc[m, 'mean_rank']:.2f}" + (f" [{n_m}/{n_distinct}]" if n_m < n_distinct else "")


def _table(g: pd.DataFrame, metrics: list[str], r: pd.DataFrame, n_distinct: int,
           marks: set[tuple[str, str]] = frozenset()) -> list[str]:
    """The markdown rows of one (dataset, model) table, header included; ``marks`` holds the
    (method, metric) cells that are not significantly worse than their column's best."""
    cell = g.set_index(["method", "metric"])
    best = _best(g, metrics)
    header = ["method"] + [f"{met} {ARROW[bool(g[g['metric'] == met]['higher_is_better'].iloc[0])]}"
                           for met in metrics] + ["overall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for m in _method_order(g, metrics, r):
        row = [f"`{m}`"] + [_cell_text(cell.loc[(m, met)], best.get(met, np.nan), (m, met) in marks)
                            if (m, met) in cell.index else "" for met in metrics]
        lines.append("| " + " | ".join(row + [_overall_text(r, m, n_distinct)]) + " |")
    return lines


def _paper_rows(prow: list[dict[str, Any]], g: pd.DataFrame, scores: pd.DataFrame, key: tuple[str, str],
                metrics: list[str]) -> list[str]:
    ds, model = key
    cell = g.set_index(["method", "metric"])
    lines = ["", "Paper reports vs measured here:", "",
             "| method | metric | paper | measured | source |", "|---|---|---:|---:|---|"]
    for p in prow:
        meas = _paper_measured(p, cell, scores, ds, model, metrics)
        what = p["metric"] + (f" vs `{p['versus']}`" if "versus" in p else "")
        lines.append(f"| `{p['method']}` | {what} | {p['value']:.3f} | "
                     f"{'' if not np.isfinite(meas) else f'{meas:.3f}'} | {p.get('source', '')} |")
    return lines


def markdown_tables(agg: pd.DataFrame, ranks: pd.DataFrame, manifest: dict[str, Any],
                    scores: pd.DataFrame) -> list[str]:
    """The per (dataset, model) markdown tables (lines), shared by ``render_markdown`` and
    :func:`saliencybench.leaderboard`."""
    lines: list[str] = []
    counted, _, _ = measurement_plan(manifest, sorted(agg["metric"].unique()))
    paper = manifest.get("config", {}).get("paper", [])
    marks = not_worse_marks(scores, metric_directions(manifest, sorted(agg["metric"].unique())))
    for (ds, model), g in agg.groupby(["dataset", "model"], sort=True):
        metrics = _order(sorted(g["metric"].unique()), manifest)
        r = ranks[(ranks["dataset"] == ds) & (ranks["model"] == model)].set_index("method")
        n_distinct = len({counted[m] for m in metrics if m in counted})
        table_marks = {(m, met) for d, mo, met, m in marks if (d, mo) == (ds, model)}
        lines += [f"## {ds} / {model}", ""] + _table(g, metrics, r, n_distinct, table_marks)
        rej = g[g["n_rejected"] > 0]
        if len(rej):
            lines.append("")
            lines.append("⚠ samples rejected (excluded from the means): " + "; ".join(
                f"`{x.method}`/{x.metric}: {x.rejected}" for x in rej.itertuples()))
        prow = [p for p in paper if p.get("model", model) == model and p.get("dataset", ds) == ds]
        if prow:
            lines += _paper_rows(prow, g, scores, (ds, model), metrics)
        lines.append("")
    return lines


def render_csv(results_dir: Path) -> str:
    agg, ranks, _ = build_tables(results_dir)
    merged = agg.merge(ranks, on=["dataset", "model", "method"], how="left")
    return merged.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def render_latex(results_dir: Path) -> str:
    agg, ranks, manifest = build_tables(results_dir)
    out = []
    for (ds, model), g in agg.groupby(["dataset", "model"], sort=True):
        metrics = _order(sorted(g["metric"].unique()), manifest)
        methods = sorted(g["method"].unique())
        cell = g.set_index(["method", "metric"])
        out.append(f"% {ds} / {model}")
        out.append("\\begin{tabular}{l" + "r" * len(metrics) + "}")
        out.append("\\toprule")
        heads = []
        for met in metrics:
            arrow = r"\uparrow" if bool(g[g["metric"] == met]["higher_is_better"].iloc[0]) else r"\downarrow"
            heads.append(met.replace("_", r"\_") + f" ${arrow}$")
        out.append("Method & " + " & ".join(heads) + " \\\\")
        out.append("\\midrule")
        for m in methods:
            cells = []
            for met in metrics:
                if (m, met) in cell.index and np.isfinite(cell.loc[(m, met), "mean"]):
                    c = cell.loc[(m, met)]
                    s = f"{c['mean']:.3f}"
                    if c["rank"] == 1:
                        s = f"\\textbf{{{s}}}"
                    cells.append(s)
                else:
                    cells.append("")
            out.append(m.replace("_", "\\_") + " & " + " & ".join(cells) + " \\\\")
        out.append("\\bottomrule")
        out.append("\\end{tabular}")
        out.append("")
    return "\n".join(out)
