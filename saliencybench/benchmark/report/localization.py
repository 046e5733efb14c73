"""The localization report (Rao, Böhle & Schiele 2022): per-setting tables, box plots (Fig. 9),
AggAtt (Fig. 12, supp. §H.4), Spearman matrices (Fig. 19) and the S-IntGrad / S-IxG kernel
sweep (supp. Tables 1-2), from the scores of the ``localization`` metric
(:mod:`saliencybench.metrics.localization`) and the cached maps.

Method aliases are read as (method, layer): ``name@layer``, else the alias's ``layer``
parameter in run.json, else the family's default layer (:func:`method_layer`); a dataset's grid
setting comes from run.json, the registry or its name (:func:`grid_setting_of`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from saliencybench.benchmark.report.aggatt import (
    DEFAULT_PERCENTILES,
    aggatt_bins,
    align_to_top_left,
    bin_median_positions,
    bin_scores,
    plot_aggatt,
    plot_aggatt_examples,
    sort_by_localization,
)
from saliencybench.benchmark.report.plots import save_figure
from saliencybench.benchmark.report.spearman import kernel_sweep_table, plot_spearman, spearman_matrix
from saliencybench.benchmark.results import read_manifest
from saliencybench.core.io import safe_filename
from saliencybench.core.registry import DATASETS, METHODS, METRICS
from saliencybench.metrics.localization import Localization, localization_parts
from saliencybench.models.grid_settings import cell_masks

LAYER_ORDER = ("input", "middle", "final")


def _metric_names_of(cls: type, scores: pd.DataFrame, manifest: dict[str, Any]) -> list[str]:
    """The run's metrics (aliases included) whose registered class is ``cls``."""
    bases = {k: v.get("base", k) for k, v in (manifest.get("config", {}).get("metrics", {}) or {}).items()
             if isinstance(v, dict)}
    out = []
    for name in scores["metric"].unique():
        base = bases.get(name, name)
        if base in METRICS and METRICS.get(base).obj is cls:
            out.append(name)
    return out



def method_layer(method: str, manifest: dict[str, Any] | None = None) -> tuple[str, str]:
    """(method label without the layer, layer label) of a method alias.

    ``name@layer`` -> (name, layer); otherwise the alias's ``layer`` parameter in run.json,
    else ``final`` for CAM-family methods (their default layer) and ``input`` otherwise.
    Aliases that differ in post-processing keep their own label (``s_ixg_k9@input`` ->
    ``s_ixg_k9``). Layer aliases are reported as such (cam -> final).
    """
    manifest = manifest or {}
    info = (manifest.get("methods", {}) or {}).get(method, {}) or {}
    if "@" in method:
        label, layer = method.split("@", 1)
    else:
        label = method
        layer = (info.get("params", {}) or {}).get("layer")
        if layer is None:
            base = info.get("base") or method
            fam = METHODS.get(base).meta.get("family") if base in METHODS else None
            layer = "final" if fam == "cam" else "input"
    layer = {"cam": "final", "None": "input"}.get(str(layer), str(layer))
    return label, layer


def grid_setting_of(dataset: str, manifest: dict[str, Any] | None = None) -> tuple[str | None, int]:
    """(setting, n) of a dataset from run.json's dataset info, the registry, or the name."""
    info = ((manifest or {}).get("datasets", {}) or {}).get(dataset, {}) or {}
    if info.get("setting"):
        return str(info["setting"]), int(info.get("grid_n", 2))
    if dataset in DATASETS:
        meta = DATASETS.get(dataset).meta
        if meta.get("setting"):
            return str(meta["setting"]), int(meta.get("n", 2))
    m = re.match(r"^(gridpg|difull|dipart)(?:_(\d)x\d)?", dataset)
    if m:
        return m.group(1), int(m.group(2) or 2)
    return None, 2


def annotate_scores(scores, metric_names: list[str], manifest: dict[str, Any]):
    """Localization rows with added columns setting, n, base_method, layer, label."""
    import pandas as pd

    df = scores[scores["metric"].isin(metric_names) & (scores["status"] == "ok")].copy()
    if df.empty:
        return df
    sett = {d: grid_setting_of(d, manifest) for d in df["dataset"].unique()}
    ml = {m: method_layer(m, manifest) for m in df["method"].unique()}
    df["setting"] = df["dataset"].map(lambda d: sett[d][0])
    df["n"] = df["dataset"].map(lambda d: sett[d][1])
    df["base_method"] = df["method"].map(lambda m: ml[m][0])
    df["layer"] = df["method"].map(lambda m: ml[m][1])
    df = df[df["setting"].notna()]
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


#: Why a (method, layer) combination is absent, where it cannot be computed at all.
IMPOSSIBLE_LAYERS: dict[tuple[str, str], str] = {}


def localization_status(scores, metric_names: list[str], manifest: dict[str, Any]):
    """One row per (setting, model, base method, layer) of the suite's methods x layers:
    ``status`` = ``ok``, ``failed: <reason>`` (no valid sample; the most common status of
    its rows), ``partial: k of n failed``, or ``not run: <why>`` (the combination is not in
    the suite, or cannot be computed: :data:`IMPOSSIBLE_LAYERS`, methods without a layer
    variant). Rao et al. 2022 Fig. 9 covers every method at every layer; a gap in the table
    is never silent."""
    import pandas as pd

    rows = scores[scores["metric"].isin(metric_names)].copy()
    if rows.empty:
        return pd.DataFrame(columns=["setting", "model", "base_method", "layer", "status"])
    rows["_status"] = rows["status"].astype(str)
    rows["status"] = "ok"
    df = annotate_scores(rows, metric_names, manifest)
    out = []
    bases = list(dict.fromkeys(df["base_method"]))
    layers = [l for l in LAYER_ORDER if l in set(df["layer"])] + sorted(set(df["layer"]) - set(LAYER_ORDER))
    for (setting, model), sub in df.groupby(["setting", "model"], sort=False):
        for base in bases:
            for layer in layers:
                cell = sub[(sub["base_method"] == base) & (sub["layer"] == layer)]
                if len(cell):
                    bad = cell[cell["_status"] != "ok"]
                    if len(bad) == 0:
                        status = "ok"
                    elif len(bad) == len(cell):
                        status = "failed: " + str(bad["_status"].mode().iloc[0])[:160]
                    else:
                        status = f"partial: {len(bad)} of {len(cell)} samples failed"
                else:
                    why = IMPOSSIBLE_LAYERS.get((base, layer))
                    if why is None and layer != "input" and base in METHODS and \
                            not METHODS.get(base).meta.get("layer_capable"):
                        why = "the method has no layer variant"
                    status = "not run: " + (why or "not in this suite")
                out.append({"setting": setting, "model": model, "base_method": base, "layer": layer,
                            "status": status})
    return pd.DataFrame(out)


def _label_order(df) -> list[str]:
    """Method labels ordered by layer (input, middle, final, others) then first appearance."""
    first = {m: i for i, m in enumerate(dict.fromkeys(df["method"]))}
    layer_rank = {l: i for i, l in enumerate(LAYER_ORDER)}
    labels = df[["method", "layer", "base_method"]].drop_duplicates("method")
    base_first = {b: i for i, b in enumerate(dict.fromkeys(labels["base_method"]))}
    return sorted(labels["method"], key=lambda m: (
        layer_rank.get(labels.set_index("method").loc[m, "layer"], len(LAYER_ORDER)),
        base_first[labels.set_index("method").loc[m, "base_method"]], first[m]))


def localization_table(df):
    """Mean / median / std / count per (setting, model, base method, layer)."""
    g = df.groupby(["setting", "model", "base_method", "layer"], sort=False)["value"]
    out = g.agg(["mean", "median", "std", "count"]).reset_index()
    out["layer"] = out["layer"].astype(str)
    return out


def plot_localization_boxes(df, path: Path, *, model: str) -> Path:
    """Rao et al. 2022 Fig. 9: localization per method x layer, one panel per setting, with the random
    (1/n^2) and perfect (1.0) lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in ("gridpg", "difull", "dipart") if s in set(df["setting"])]
    settings += sorted(set(df["setting"]) - set(settings))
    bases = list(dict.fromkeys(df["base_method"]))
    layers = [l for l in LAYER_ORDER if l in set(df["layer"])] + sorted(set(df["layer"]) - set(LAYER_ORDER))
    colors = {l: c for l, c in zip(layers, ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"))}
    fig, axes = plt.subplots(len(settings), 1, figsize=(max(6.0, 0.42 * len(bases) + 1.5), 2.9 * len(settings)),
                             squeeze=False, sharey=True)
    axes = axes.T  # one row of panels in the loop below, stacked vertically on the page
    width = 0.8 / max(1, len(layers))
    for ax, s in zip(axes[0], settings):
        sub = df[df["setting"] == s]
        n = int(sub["n"].iloc[0]) if len(sub) else 2
        for j, layer in enumerate(layers):
            data, pos = [], []
            for i, b in enumerate(bases):
                v = sub[(sub["base_method"] == b) & (sub["layer"] == layer)]["value"].dropna().to_numpy()
                if len(v):
                    data.append(v)
                    pos.append(i + (j - (len(layers) - 1) / 2) * width)
            if data:
                bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
                for patch in bp["boxes"]:
                    patch.set_facecolor(colors[layer])
                    patch.set_alpha(0.8)
                for med in bp["medians"]:
                    med.set_color("black")
        ax.axhline(1.0, ls=":", color="gray", lw=1)
        ax.axhline(1.0 / (n * n), ls=":", color="gray", lw=1)
        ax.set_xticks(range(len(bases)))
        ax.set_xticklabels(bases, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{s} ({n}x{n})", fontsize=9)
        ax.set_ylim(-0.03, 1.05)
    for ax in axes[0]:
        ax.set_ylabel("localization")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[l], alpha=0.8) for l in layers]
    axes[0, 0].legend(handles, layers, loc="lower left", fontsize=7, ncol=len(layers), framealpha=0.8)
    fig.suptitle(f"Localization ({model}); dotted: perfect 1.0 and random 1/n^2", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, path, tight=False)

def _cell_of(sample_id: str) -> int | None:
    m = re.search(r"c(\d+)$", str(sample_id))
    return int(m.group(1)) if m else None


def localization_report(results_dir: Path, scores: pd.DataFrame, cache: Any, *, metric_class: type = Localization,
                        aggatt_cell: int | str = "align", sweep_reference: str = "gradcam@final") -> list[Path]:
    """Write the localization figures and CSVs into ``results_dir/figures``; return paths.

    - ``localization_table.csv`` (+ ``.md``): mean / median / std per setting x model x
      method x layer; ``localization_status.csv``; ``localization_boxes_<model>.png`` (Rao et
      al. 2022 Fig. 9).
    - ``aggatt_<setting>_<model>.png``, ``aggatt_examples_<setting>_<model>.png`` (the map
      of each bin's median sample) and ``aggatt_bins.csv`` (Rao et al. 2022 Fig. 12, supp.
      §H.4), from the cached maps. The paper's figures show the scored cell at the top-left. The
      default ``aggatt_cell="align"`` uses every scored cell, each map shifted by whole cells so
      its target is top-left (:func:`align_to_top_left`), which multiplies the maps per bin by
      n*n (GridPG) or 2 (DiFull / DiPart) for small runs; ``aggatt_cell=k`` keeps only the
      maps scored at cell k, in place (the official code's ``head_pos_idx``);
      ``aggatt_cell="all"`` keeps every map in place, each scored against its own cell.
    - ``spearman_<setting>_<model>.csv/.png`` (Rao et al. 2022 Fig. 19).
    - ``kernel_sweep.csv`` (+ ``.md``) when smoothed S-IntGrad / S-IxG aliases were run
      (Rao et al. 2022 supp. Tables 1-2).
    """
    manifest = read_manifest(Path(results_dir))
    names = _metric_names_of(metric_class, scores, manifest)
    df = annotate_scores(scores, names, manifest)
    if df.empty:
        return []
    fig_dir = Path(results_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = _write_tables(fig_dir, df, localization_status(scores, names, manifest))
    for model, sub in df.groupby("model", sort=False):
        paths.append(plot_localization_boxes(sub, fig_dir / f"localization_boxes_{safe_filename(model)}.png",
                                             model=model))
    if cache is not None:
        paths += _aggatt_outputs(fig_dir, df, cache, aggatt_cell)
    paths += _spearman_outputs(fig_dir, df)
    paths += _kernel_sweep_outputs(fig_dir, df, sweep_reference)
    return paths


def _write_tables(fig_dir: Path, df: pd.DataFrame, status: pd.DataFrame) -> list[Path]:
    """``localization_table.csv``, ``localization_status.csv`` and ``localization_table.md``
    (the mean table, then the (method, layer) combinations not computed or incomplete)."""
    table = localization_table(df)
    p_table = fig_dir / "localization_table.csv"
    table.to_csv(p_table, index=False, float_format="%.4f")
    p_status = fig_dir / "localization_status.csv"
    status.to_csv(p_status, index=False)
    md = fig_dir / "localization_table.md"
    text = localization_markdown(table)
    gaps = status[status["status"] != "ok"] if len(status) else status
    if len(gaps):
        grouped = gaps.groupby(["base_method", "layer", "status"], sort=False).agg(
            settings=("setting", lambda v: ", ".join(dict.fromkeys(v))),
            models=("model", lambda v: ", ".join(dict.fromkeys(v)))).reset_index()
        text += ("\n### Not computed or incomplete (method x layer)\n\n"
                 "| method | layer | status | settings | models |\n|---|---|---|---|---|\n"
                 + "".join(f"| {r.base_method} | {r.layer} | {r.status} | {r.settings} | {r.models} |\n"
                           for r in grouped.itertuples()))
    md.write_text(text)
    return [p_table, p_status, md]


# -- AggAtt from the cached maps -------------------------------------------------------------

def _aggatt_outputs(fig_dir: Path, df: pd.DataFrame, cache: Any, aggatt_cell: int | str) -> list[Path]:
    """AggAtt and example figures per (setting, model, dataset), and ``aggatt_bins.csv``."""
    paths: list[Path] = []
    bin_rows: list[dict[str, Any]] = []
    for (setting, model, dataset), sub in df.groupby(["setting", "model", "dataset"], sort=False):
        n = int(sub["n"].iloc[0])
        rows: dict[str, Tensor] = {}
        examples: dict[str, Tensor] = {}
        for method in _label_order(sub):
            got = _aggatt_method(cache, (dataset, model, method), n, aggatt_cell)
            if got is None:
                continue
            rows[method], examples[method], bins = got
            bin_rows += [{"setting": setting, "model": model, "dataset": dataset, "method": method, **b}
                         for b in bins]
        if rows:
            paths += _plot_aggatt_pair(fig_dir, (setting, model), rows, examples, n, aggatt_cell)
    if bin_rows:
        p = fig_dir / "aggatt_bins.csv"
        pd.DataFrame(bin_rows).to_csv(p, index=False, float_format="%.4f")
        paths.append(p)
    return paths


def _aggatt_maps(maps: Tensor, cells: list[int], n: int, aggatt_cell: int | str) -> tuple[Tensor, Tensor]:
    """(maps, cell masks) as AggAtt scores them: aligned to the top-left cell, every cell in
    place, or only the maps scored at cell k (see :func:`localization_report`)."""
    all_masks = cell_masks(maps.shape[-2:], n)
    if aggatt_cell == "align":
        return align_to_top_left(maps, cells, n), all_masks[0].expand(maps.shape[0], 1, -1, -1)
    if aggatt_cell == "all":
        return maps, all_masks[torch.as_tensor(cells)]
    return maps, all_masks[int(aggatt_cell)].expand(maps.shape[0], 1, -1, -1)


def _aggatt_method(cache: Any, key: tuple[str, str, str], n: int,
                   aggatt_cell: int | str) -> tuple[Tensor, Tensor, list[dict[str, Any]]] | None:
    """One method's bin means, the map of each bin's median sample and its ``aggatt_bins``
    rows; None when nothing is cached or no map is scored at the requested cell."""
    dataset, model, method = key
    try:
        ids, maps = cache.load(dataset, model, method)
    except Exception:  # nothing cached for this method (failed or not cached)
        return None
    cells = [_cell_of(sid) for sid in ids]
    keep = [i for i, c in enumerate(cells)
            if c is not None and (aggatt_cell in ("align", "all") or c == int(aggatt_cell))]
    if not keep:
        return None
    maps, mask = _aggatt_maps(maps[torch.as_tensor(keep)].float(), [cells[i] for i in keep], n, aggatt_cell)
    score, inside, _ = localization_parts(maps, mask)
    means, ranges = aggatt_bins(maps, score, inside, DEFAULT_PERCENTILES)
    order = sort_by_localization(score, inside)
    medians = bin_median_positions(ranges)
    examples = torch.stack([maps[int(order[m])] if m is not None else torch.zeros_like(maps[0]) for m in medians])
    bins = [{"bin": b, "pct_lo": DEFAULT_PERCENTILES[b], "pct_hi": DEFAULT_PERCENTILES[b + 1], **info,
             "median_sample_id": "" if medians[b] is None else ids[keep[int(order[medians[b]])]]}
            for b, info in enumerate(bin_scores(score, inside, ranges))]
    return means, examples, bins


def _plot_aggatt_pair(fig_dir: Path, key: tuple[str, str], rows: dict[str, Tensor], examples: dict[str, Tensor],
                      n: int, aggatt_cell: int | str) -> list[Path]:
    setting, model = key
    view = {"align": "scored cell moved to the top-left", "all": "every cell in place"}.get(
        str(aggatt_cell), f"cell {aggatt_cell} only")
    box = 0 if aggatt_cell in ("align", "all") else int(aggatt_cell)
    cell = box if aggatt_cell != "all" else -1
    stem = f"{safe_filename(setting)}_{safe_filename(model)}"
    return [
        plot_aggatt(rows, fig_dir / f"aggatt_{stem}.png", title=f"AggAtt {setting} {model} ({view})", n=n, cell=cell),
        plot_aggatt_examples(examples, fig_dir / f"aggatt_examples_{stem}.png",
                             title=f"AggAtt examples {setting} {model}: map of each bin's median sample ({view})",
                             n=n, cell=cell),
    ]


# -- Spearman matrices and the smoothing sweep ------------------------------------------------

def _spearman_outputs(fig_dir: Path, df: pd.DataFrame) -> list[Path]:
    paths: list[Path] = []
    for (setting, model), sub in df.groupby(["setting", "model"], sort=False):
        if sub["method"].nunique() < 2:
            continue
        mat = spearman_matrix(sub, label="method", order=_label_order(sub))
        stem = f"spearman_{safe_filename(setting)}_{safe_filename(model)}"
        mat.to_csv(fig_dir / f"{stem}.csv", float_format="%.4f")
        paths.append(fig_dir / f"{stem}.csv")
        paths.append(plot_spearman(mat, fig_dir / f"{stem}.png", title=f"Spearman's rho, {setting}, {model}"))
    return paths


def _kernel_sweep_outputs(fig_dir: Path, df: pd.DataFrame, sweep_reference: str) -> list[Path]:
    grid_pg = df[df["setting"] == "gridpg"]
    if not len(grid_pg):
        return []
    sweep = kernel_sweep_table(grid_pg, reference=sweep_reference, label="method", group="model")
    if not (len(sweep) and any(str(c).startswith("K=") for c in sweep.columns)):
        return []
    p = fig_dir / "kernel_sweep.csv"
    sweep.to_csv(p, index=False, float_format="%.4f")
    md = fig_dir / "kernel_sweep.md"
    md.write_text(_df_markdown(sweep))
    return [p, md]


def _df_markdown(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(
            ("–" if v != v else f"{v:.2f}") if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def localization_markdown(table) -> str:
    """Mean localization as a method x (setting, layer) table per model (for the note)."""
    import pandas as pd

    out = []
    for model, sub in table.groupby("model", sort=False):
        piv = sub.pivot_table(index="base_method", columns=["setting", "layer"], values="mean", sort=False)
        order = [(s, l) for s in ("gridpg", "difull", "dipart") for l in LAYER_ORDER if (s, l) in piv.columns]
        order += [c for c in piv.columns if c not in order]
        piv = piv[order]
        flat = pd.DataFrame(piv.to_numpy(), index=piv.index, columns=[f"{s}/{l}" for s, l in order])
        flat.insert(0, "method", flat.index)
        out.append(f"### {model}\n\n" + _df_markdown(flat.reset_index(drop=True)))
    return "\n".join(out)
