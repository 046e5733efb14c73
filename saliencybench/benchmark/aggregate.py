"""Aggregation of per-sample scores: mean, std, 95% bootstrap CI, ranks.

Only rows with ``status == "ok"`` are aggregated; the number of rejected samples and why
are kept beside the means, so nothing silently disappears. Ranks are per (dataset, model,
metric) with 1 = best in the metric's direction; the overall rank is the mean of a method's
ranks over the distinct measurements it has (a method missing one is not averaged over it, and
is flagged); which metrics are one measurement is decided by the caller (:func:`overall_rank`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

GROUP = ["dataset", "model", "method", "metric"]


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (deterministic given ``seed``)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (np.nan, np.nan)
    if v.size == 1:
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def aggregate(scores: pd.DataFrame, directions: Mapping[str, bool], *, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """One row per (dataset, model, method, metric) with mean, std, ci_low, ci_high, n, n_rejected, rank.

    ``directions`` maps metric name -> higher_is_better.
    """
    rows = []
    for key, g in scores.groupby(GROUP, sort=True):
        ok = g[g["status"] == "ok"]["value"].to_numpy(dtype=np.float64)
        ok = ok[np.isfinite(ok)]
        lo, hi = bootstrap_ci(ok, n_boot=n_boot, seed=seed)
        rejected = g[g["status"] != "ok"]["status"].value_counts().to_dict()
        rows.append({
            **dict(zip(GROUP, key)),
            "mean": float(ok.mean()) if ok.size else np.nan,
            "std": float(ok.std(ddof=1)) if ok.size > 1 else (0.0 if ok.size == 1 else np.nan),
            "ci_low": lo, "ci_high": hi, "n": int(ok.size),
            "n_rejected": int(len(g) - ok.size),
            "rejected": "; ".join(f"{k}: {v}" for k, v in sorted(rejected.items())),
        })
    agg = pd.DataFrame(rows, columns=GROUP + ["mean", "std", "ci_low", "ci_high", "n", "n_rejected", "rejected"])
    if agg.empty:
        agg["rank"] = []
        return agg
    agg["higher_is_better"] = agg["metric"].map(lambda m: bool(directions.get(m, True)))
    signed = np.where(agg["higher_is_better"], -agg["mean"], agg["mean"])
    agg["_signed"] = signed
    agg["rank"] = agg.groupby(["dataset", "model", "metric"])["_signed"].rank(method="min", na_option="keep")
    return agg.drop(columns="_signed")


def overall_rank(agg: pd.DataFrame, counted: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Mean rank of each method per (dataset, model) over distinct measurements, with their count.

    ``counted`` maps each metric that enters the overall rank to the measurement it stands for:
    metrics mapped to the same measurement (identical by construction, e.g. LeRF and Insertion
    on one substrate) count once, with the mean of their ranks; metrics left out of the mapping
    (e.g. a difference of two metrics that are both counted) do not count. ``None``: every
    metric is its own measurement. ``n_metrics`` is the number of measurements averaged.
    """
    a = agg.dropna(subset=["rank"])
    if counted is not None:
        a = a[a["metric"].isin(list(counted))].assign(metric=lambda d: d["metric"].map(counted))
        a = a.groupby(["dataset", "model", "method", "metric"], as_index=False)["rank"].mean()
    g = a.groupby(["dataset", "model", "method"])
    out = g["rank"].agg(["mean", "count"]).rename(columns={"mean": "mean_rank", "count": "n_metrics"}).reset_index()
    out["overall_rank"] = out.groupby(["dataset", "model"])["mean_rank"].rank(method="min")
    return out


def ci_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return not (a[1] < b[0] or b[1] < a[0])
