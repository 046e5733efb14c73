"""Which differences between methods are real: paired tests, Holm correction, critical differences.

Within one block (dataset, model, metric) every method is scored on the same samples, so two
methods are compared on their per-sample differences (a paired design):

- ``wilcoxon``: the Wilcoxon signed-rank test of the differences (Demšar 2006, JMLR, "Statistical
  Comparisons of Classifiers over Multiple Data Sets", Sec. 3.1.3), scipy's two-sided exact or
  normal-approximation p-value; all differences zero gives p = 1;
- ``bootstrap``: a paired bootstrap of the mean difference (Efron & Tibshirani 1993, Sec. 16.4):
  samples are drawn with replacement, and the two-sided p-value is the share of resampled means,
  centred on the observed one, at least as far from 0 as the observed mean, (1 + #) / (1 + B).

The p-values of a block's table (all pairs of its methods) are corrected for multiple testing by
Holm's step-down procedure (Holm 1979; Demšar 2006, Sec. 3.2.2, "Holm's step-down"). Over the blocks
of a suite, the critical-difference diagram of Demšar 2006 (Sec. 3.2.2, Fig. 1; Nemenyi test) shows
the methods' average ranks and joins those whose ranks differ by less than

    CD = q_alpha sqrt(k (k + 1) / (6 N)),     q_alpha = studentized range quantile (k, inf) / sqrt(2),

for k methods over N blocks. Blocks whose per-method means are identical (two metrics that are one
measurement by construction) count once.

Inputs are long-format scores (columns suite, dataset, model, method, metric, sample_id, value,
status); only rows with status ``ok`` and a finite value enter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from saliencybench.benchmark.report.plots import save_figure  # noqa: E402

BLOCK = ["dataset", "model", "metric"]
TESTS = ("wilcoxon", "bootstrap")


@dataclass(frozen=True)
class PairedTest:
    """Options of the paired comparisons: the test, its level, and the bootstrap's size and seed.

    The bootstrap's smallest p-value is 1 / (1 + n_boot), and Holm's first step needs p < alpha / m
    for m pairs: 10000 resamples resolve tables of up to about 500 pairs (32 methods) at 0.05.
    """

    test: str = "wilcoxon"
    alpha: float = 0.05
    n_boot: int = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {TESTS}, got {self.test!r}")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j)); NaN stays NaN and is not counted in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted) if m else adjusted
    return out


def paired_p_value(diff: np.ndarray, options: PairedTest = PairedTest()) -> float:
    """Two-sided p-value of "mean (or median) paired difference = 0" for per-sample differences."""
    diff = np.asarray(diff, dtype=float)
    if len(diff) == 0:
        return float("nan")
    if not np.any(diff != 0):
        return 1.0
    if options.test == "wilcoxon":
        return float(stats.wilcoxon(diff).pvalue)
    rng = np.random.default_rng(options.seed)
    means = diff[rng.integers(0, len(diff), size=(options.n_boot, len(diff)))].mean(1)
    observed = diff.mean()
    extreme = np.abs(means - observed) >= abs(observed)
    return float((1 + extreme.sum()) / (1 + options.n_boot))


def _matrix(block: pd.DataFrame) -> pd.DataFrame:
    """sample_id x method values of one block (ok, finite rows)."""
    ok = block[(block["status"] == "ok") & np.isfinite(block["value"].astype(float))]
    return ok.pivot_table(index="sample_id", columns="method", values="value", aggfunc="first")


def pairwise_table(block: pd.DataFrame, options: PairedTest = PairedTest()) -> pd.DataFrame:
    """Every pair of methods of one (dataset, model, metric) block on their common samples.

    Columns: method_a, method_b, n (common samples), mean_diff (a - b), p, p_holm (Holm over the
    table), significant (p_holm < alpha).
    """
    wide = _matrix(block)
    methods = sorted(wide.columns)
    rows = []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            both = wide[[a, b]].dropna()
            diff = (both[a] - both[b]).to_numpy(dtype=float)
            rows.append({"method_a": a, "method_b": b, "n": len(diff),
                         "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
                         "p": paired_p_value(diff, options)})
    table = pd.DataFrame(rows, columns=["method_a", "method_b", "n", "mean_diff", "p"])
    table["p_holm"] = holm(table["p"].to_numpy()) if len(table) else []
    table["significant"] = table["p_holm"] < options.alpha
    return table


def _pair_p(table: pd.DataFrame, a: str, b: str) -> float:
    hit = table[((table["method_a"] == a) & (table["method_b"] == b))
                | ((table["method_a"] == b) & (table["method_b"] == a))]
    return float(hit["p_holm"].iloc[0]) if len(hit) else float("nan")


def not_worse_than_best(block: pd.DataFrame, *, higher_is_better: bool,
                        options: PairedTest = PairedTest()) -> pd.DataFrame:
    """Per method of one block: its mean, whether it is the best (direction-aware), the Holm p-value
    of its comparison with the best, and ``not_worse`` (the best itself, or p_holm >= alpha).

    Holm's correction runs over the whole table of pairs of the block, as the leaderboard's table.
    """
    wide = _matrix(block)
    means = wide.mean()
    best = means.idxmax() if higher_is_better else means.idxmin()
    table = pairwise_table(block, options)
    rows = []
    for method, mean in means.sort_values(ascending=not higher_is_better).items():
        p = 1.0 if method == best else _pair_p(table, method, best)
        rows.append({"method": method, "mean": float(mean), "best": method == best, "p_holm_vs_best": p,
                     "not_worse": bool(method == best or not p < options.alpha)})
    return pd.DataFrame(rows)


def neighbour_pairs(scores: pd.DataFrame, higher_is_better: Mapping[str, bool],
                    options: PairedTest = PairedTest()) -> pd.DataFrame:
    """Adjacent methods of every block's ranking by mean (the leaderboard's order), with the Holm
    p-value of their paired comparison; ``significant`` False marks a tie the data cannot break."""
    rows = []
    for (ds, model, metric), block in scores.groupby(BLOCK, sort=True):
        means = _matrix(block).mean().sort_values(ascending=not higher_is_better.get(metric, True))
        table = pairwise_table(block, options)
        order = list(means.index)
        for upper, lower in zip(order, order[1:]):
            p = _pair_p(table, upper, lower)
            rows.append({"dataset": ds, "model": model, "metric": metric, "upper": upper, "lower": lower,
                         "mean_upper": float(means[upper]), "mean_lower": float(means[lower]),
                         "p_holm": p, "significant": bool(p < options.alpha)})
    return pd.DataFrame(rows)


def _common_methods(means: pd.DataFrame) -> pd.DataFrame:
    """The blocks x methods table restricted to the largest complete rectangle among the candidates
    "methods of one block, and every block that has them all" (most methods x blocks wins): a
    metric that applies to a few methods, or a model with more methods, does not shrink the rest."""
    best, size = means.iloc[:0, :0], 0
    for _, row in means.iterrows():
        methods = row.index[row.notna()]
        blocks = means[methods].notna().all(axis=1)
        if len(methods) * int(blocks.sum()) > size:
            best, size = means.loc[blocks, methods], len(methods) * int(blocks.sum())
    return best


def average_ranks(scores: pd.DataFrame, higher_is_better: Mapping[str, bool]) -> tuple[pd.Series, int]:
    """Average rank of each method over the blocks (1 = best; ties share the mean rank), with the
    number N of distinct blocks (Demšar 2006, Sec. 3.2.2): the ranks need the same methods in every
    block (see :func:`_common_methods`), and blocks whose per-method means are identical to an
    earlier block's count once."""
    ok = scores[(scores["status"] == "ok") & np.isfinite(scores["value"].astype(float))]
    means = _common_methods(ok.groupby(BLOCK + ["method"])["value"].mean().unstack("method"))
    means = means[~means.round(12).duplicated()]
    sign = np.array([1.0 if higher_is_better.get(m, True) else -1.0 for m in means.index.get_level_values("metric")])
    ranks = (-means.mul(sign, axis=0)).rank(axis=1, method="average")
    return ranks.mean().sort_values(), len(means)


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks, k methods over n blocks (Demšar 2006, Sec. 3.2.2)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


def _cliques(ranks: pd.Series, cd: float) -> list[tuple[float, float]]:
    """Maximal runs of methods (sorted by rank) whose extreme ranks differ by less than ``cd``."""
    r = ranks.to_numpy()
    spans = []
    for i in range(len(r)):
        j = int(np.searchsorted(r, r[i] + cd, side="left")) - 1
        if j > i and not any(s <= i and j <= e for s, e in spans):
            spans.append((i, j))
    return [(float(r[s]), float(r[e])) for s, e in spans]


def critical_difference_figure(scores: pd.DataFrame, higher_is_better: Mapping[str, bool], out_path: Path, *,
                               alpha: float = 0.05, title: str = "") -> Path:
    """The critical-difference diagram of Demšar 2006 (Sec. 3.2.2, Fig. 1) over the blocks of
    ``scores``: an axis of average ranks, one label per method, and a bar joining every group of
    methods whose average ranks differ by less than the Nemenyi CD (drawn above the axis)."""
    ranks, n = average_ranks(scores, higher_is_better)
    k = len(ranks)
    if k < 2 or n < 1:
        raise ValueError("a critical-difference diagram needs at least two methods present in every block")
    cd = nemenyi_cd(k, n, alpha)
    cliques = _cliques(ranks, cd)
    half, top = (k + 1) // 2, 0.6 + 0.3 * len(cliques)
    fig, ax = plt.subplots(figsize=(8.0, 1.6 + 0.22 * (half + top)))
    ax.set_xlim(k + 0.5, 0.5)  # rank 1 (best) on the right, as in Demšar's Fig. 1
    ax.set_ylim(-(half + top + 0.5), 2.0)
    ax.axis("off")
    ax.hlines(0, 1, k, color="k", lw=1)
    for t in range(1, k + 1):
        ax.vlines(t, 0, 0.15, color="k", lw=0.8)
        ax.text(t, 0.3, str(t), ha="center", fontsize=7)
    ax.hlines(1.3, 1, 1 + cd, color="k", lw=1.5)
    ax.text(1 + cd / 2, 1.5, f"CD = {cd:.2f}", ha="center", fontsize=7)
    for i, (method, r) in enumerate(ranks.items()):
        best_side = i < half
        y = -(i if best_side else k - 1 - i) - top
        x_label = 0.6 if best_side else k + 0.4
        ax.plot([r, r, x_label], [0, y, y], color="0.3", lw=0.7)
        ax.text(x_label, y, f"{method} ({r:.2f})", ha="left" if best_side else "right", va="center", fontsize=7)
    for level, (lo, hi) in enumerate(cliques):
        ax.hlines(-0.4 - 0.3 * level, lo - 0.05, hi + 0.05, color="tab:red", lw=2.2)
    ax.set_title(title or f"Critical difference (Nemenyi, alpha={alpha}): {k} methods, {n} blocks", fontsize=9)
    return save_figure(fig, Path(out_path))
