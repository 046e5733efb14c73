"""Spearman rank correlation of per-sample localization scores (Rao et al. 2022, supp. §C).

:func:`spearman_matrix` correlates the per-(grid, cell) scores of every pair of
(method, layer) labels over the samples both have (Rao et al. 2022 Fig. 19), :func:`spearman_versus` one
pair (the leaderboard's measured value for a ``[[paper]]`` row with ``versus``);
:func:`kernel_sweep_table` builds the S-IntGrad / S-IxG smoothing sweep against Grad-CAM at
the final layer (Rao et al. 2022 supp. Tables 1-2). Both are pure functions of a long-format DataFrame;
:func:`plot_spearman` draws the heatmap.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

#: Sweep families: label -> (regex matching a smoothed alias with group "k", unsmoothed names).
DEFAULT_SWEEP_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "S-IntGrad": (r"^s_intgrad_k(?P<k>\d+)(@input)?$", ("integrated_gradients@input", "integrated_gradients")),
    "S-IxG": (r"^s_ixg_k(?P<k>\d+)(@input)?$", ("ixg@input", "ixg")),
}


def _rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as in Spearman's definition."""
    return pd.Series(a).rank(method="average").to_numpy(dtype=float, copy=True)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two equally long vectors (NaN pairs dropped; NaN if undefined)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2:
        return float("nan")
    ra, rb = _rank(a), _rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def spearman_versus(df: pd.DataFrame, a: str, b: str, *, label: str = "method", key: str = "sample_id",
                    value: str = "value") -> float:
    """Spearman's rho between the per-sample scores of ``label`` values ``a`` and ``b``, matched
    on ``key`` (NaN when either is absent): one entry of Rao et al. 2022 supp. Tables 1-2, e.g. a smoothed
    method against Grad-CAM at the final layer."""
    sub = df[df[label].isin([a, b])]
    wide = sub.pivot_table(index=key, columns=label, values=value, aggfunc="first")
    if a not in wide.columns or b not in wide.columns:
        return float("nan")
    return spearman(wide[a].to_numpy(dtype=float), wide[b].to_numpy(dtype=float))


def spearman_matrix(df: pd.DataFrame, *, label: str = "method", key: str = "sample_id",
                    value: str = "value", order: list[str] | None = None) -> pd.DataFrame:
    """Square DataFrame of Spearman's rho between every pair of ``label`` values.

    ``df`` is long format for one (setting, model): one row per (label, key). Pairs are
    matched on ``key`` (the (grid, cell) sample id); rows with NaN are dropped per pair.
    """
    wide = df.pivot_table(index=key, columns=label, values=value, aggfunc="first")
    labels = order if order is not None else list(wide.columns)
    labels = [l for l in labels if l in wide.columns]
    out = pd.DataFrame(np.nan, index=labels, columns=labels, dtype=float)
    cols = {l: wide[l].to_numpy(dtype=float) for l in labels}
    for i, a in enumerate(labels):
        for b in labels[i:]:
            rho = spearman(cols[a], cols[b])  # diagonal: 1, or NaN for a constant column
            out.loc[a, b] = out.loc[b, a] = rho
    return out


def kernel_sweep_table(df: pd.DataFrame, *, reference: str = "gradcam@final",
                       families: Mapping[str, tuple[str, tuple[str, ...]]] | None = None,
                       label: str = "method", key: str = "sample_id", value: str = "value",
                       group: str = "model") -> pd.DataFrame:
    """Spearman's rho of each smoothed method against ``reference`` per kernel size.

    Rows: (``group`` value, family); columns: ``Original`` (the unsmoothed method, if
    present) then ``K=<k>`` in increasing k, as in Rao et al. 2022 supp. Tables 1-2. Methods are
    recognised by the family regexes (default: ``s_intgrad_k<K>`` / ``s_ixg_k<K>``, with
    an optional ``@input`` suffix).
    """
    fams = dict(families or DEFAULT_SWEEP_FAMILIES)
    rows = []
    groups = [(None, df)] if group not in df.columns else list(df.groupby(group, sort=True))
    for gval, sub in groups:
        wide = sub.pivot_table(index=key, columns=label, values=value, aggfunc="first")
        if reference not in wide.columns:
            continue
        ref = wide[reference].to_numpy(dtype=float)
        for fam, (pattern, originals) in fams.items():
            rx = re.compile(pattern)
            row: dict[str, float | str] = {}
            for orig in originals:
                if orig in wide.columns:
                    row["Original"] = spearman(wide[orig].to_numpy(dtype=float), ref)
                    break
            ks = []
            for col in wide.columns:
                m = rx.match(str(col))
                if m:
                    ks.append((int(m.group("k")), col))
            for k, col in sorted(ks):
                row[f"K={k}"] = spearman(wide[col].to_numpy(dtype=float), ref)
            if row:
                rows.append({group: gval, "family": fam, **row})
    if not rows:
        return pd.DataFrame(columns=[group, "family"])
    out = pd.DataFrame(rows)
    kcols = sorted([c for c in out.columns if c.startswith("K=")], key=lambda c: int(c[2:]))
    cols = [group, "family"] + (["Original"] if "Original" in out.columns else []) + kcols
    return out[cols]


def plot_spearman(matrix: pd.DataFrame, path: Path, *, title: str = "") -> Path:
    """Heatmap of a :func:`spearman_matrix` result (annotated when small)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saliencybench.benchmark.report.plots import save_figure

    k = len(matrix)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.5, 0.45 * k + 2.0))
    im = ax.imshow(matrix.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(matrix.columns, rotation=90, fontsize=7)
    ax.set_yticklabels(matrix.index, fontsize=7)
    if k <= 24:
        vals = matrix.to_numpy(dtype=float)
        for i in range(k):
            for j in range(k):
                if np.isfinite(vals[i, j]):
                    ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if abs(vals[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Spearman's rho")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, Path(path), tight=False)
