"""Localization metrics: grid localization (GridPG / DiFull / DiPart), relevance mass in a
ground-truth mask, and the pointing game; plus the localization report (box plots, AggAtt,
Spearman, smoothing sweep).

- ``localization`` (Rao, Böhle & Schiele 2022, supp. Eq. 2 and §H.3): positive attribution
  inside the scored grid cell divided by the total positive attribution; 0 when the total is
  at most 1e-7. Maps arrive bilinearly upsampled to the input size (layer attributions
  included); the mask is the scored cell. Random (uniform) attribution scores 1/n^2.
- ``mass_in_mask``: the same ratio on a ground-truth object mask (relevance mass accuracy,
  Arras et al. 2022, on the positive part of the map as Eq. 2 does).
- ``pointing_game`` (Zhang et al. 2018): 1 if the maximum of the map lies inside the mask.
  Rule for ties: when several pixels share the maximum, the score is the fraction of them
  inside the mask (so a constant map scores the mask's area fraction, not 1). Masks may be
  dilated by ``tolerance`` pixels (Zhang et al. use 15 px at 224). Empty masks give NaN
  with status ``empty_mask``; samples without masks give status ``no_mask``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from saliencybench.core.io import safe_filename
from saliencybench.core.registry import DATASETS, METHODS, METRICS, register_metric
from saliencybench.core.types import EvalContext, MetricOutput
from saliencybench.metrics.base import Metric

EPS_TOTAL = 1e-7
LAYER_ORDER = ("input", "middle", "final")


# -- pure scoring functions ----------------------------------------------------------------

def _fit(attribution: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    if attribution.ndim == 3:
        attribution = attribution.unsqueeze(1)
    if attribution.shape[1] != 1:
        attribution = attribution.sum(1, keepdim=True)
    mask = mask.to(attribution.device, attribution.dtype)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if attribution.shape[-2:] != mask.shape[-2:]:
        attribution = F.interpolate(attribution, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    return attribution, mask


def localization_parts(attribution: Tensor, mask: Tensor, eps: float = EPS_TOTAL) -> tuple[Tensor, Tensor, Tensor]:
    """(score, inside, total) per sample: Rao et al. 2022 supp. Eq. 2.

    ``inside`` = sum of positive attribution in the mask, ``total`` = sum of positive
    attribution; score = inside / total, or 0 where total <= ``eps`` (supp. §H.3). Maps of
    another size are bilinearly resized to the mask first.
    """
    a, m = _fit(attribution, mask)
    pos = a.clamp(min=0).double()
    inside = (pos * (m > 0.5)).flatten(1).sum(1)
    total = pos.flatten(1).sum(1)
    score = torch.where(total > eps, inside / total.clamp(min=eps), torch.zeros_like(total))
    return score.float(), inside.float(), total.float()


def localization_score(attribution: Tensor, mask: Tensor, eps: float = EPS_TOTAL) -> Tensor:
    """(B,) grid localization score (see :func:`localization_parts`)."""
    return localization_parts(attribution, mask, eps)[0]


def pointing_game_score(attribution: Tensor, mask: Tensor, *, tolerance: int = 0,
                        tie_eps: float = 0.0) -> tuple[Tensor, list[str]]:
    """(B,) pointing-game hits with the tie rule of the module docstring, and statuses."""
    a, m = _fit(attribution, mask)
    m = (m > 0.5).to(a.dtype)
    if tolerance > 0:
        m = F.max_pool2d(m, 2 * tolerance + 1, stride=1, padding=tolerance)
    flat = a.flatten(1)
    top = flat.max(1, keepdim=True).values
    is_max = (flat >= top - tie_eps).to(a.dtype)
    hits = (is_max * m.flatten(1)).sum(1) / is_max.sum(1).clamp(min=1)
    empty = m.flatten(1).sum(1) == 0
    status = ["empty_mask" if e else "ok" for e in empty.tolist()]
    hits = torch.where(empty, torch.full_like(hits, float("nan")), hits)
    return hits.float(), status


# -- registered metrics --------------------------------------------------------------------

def _no_mask_output(b: int, device) -> MetricOutput:
    return MetricOutput(values=torch.full((b,), float("nan"), device=device), status=["no_mask"] * b)


@register_metric("localization", higher_is_better=True, paper="Rao, Böhle & Schiele 2022 (GridPG / DiFull / DiPart)",
                 description="positive attribution in the scored grid cell / total positive attribution")
class Localization(Metric):
    """Grid localization score (003 supp. Eq. 2); 0 when the total is <= 1e-7."""

    needs_mask = True

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        mask = ctx.batch.mask
        if mask is None:
            return _no_mask_output(attribution.shape[0], attribution.device)
        score, inside, total = localization_parts(attribution, mask, float(self.params.get("eps", EPS_TOTAL)))
        return MetricOutput(values=score, extra={"inside": inside, "total": total})

    @classmethod
    def report(cls, results_dir: Path, scores, cache) -> list[Path]:
        return localization_report(Path(results_dir), scores, cache, metric_class=cls)


@register_metric("mass_in_mask", higher_is_better=True, paper="Arras et al. 2022 (relevance mass accuracy)",
                 description="positive attribution inside the object mask / total positive attribution")
class MassInMask(Metric):
    """Relevance mass accuracy on ground-truth object masks (positive part)."""

    needs_mask = True

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        mask = ctx.batch.mask
        if mask is None:
            return _no_mask_output(attribution.shape[0], attribution.device)
        score, inside, total = localization_parts(attribution, mask, float(self.params.get("eps", EPS_TOTAL)))
        empty = (mask.flatten(1) > 0.5).sum(1) == 0
        status = ["empty_mask" if e else "ok" for e in empty.tolist()]
        score = torch.where(empty.to(score.device), torch.full_like(score, float("nan")), score)
        return MetricOutput(values=score, status=status, extra={"inside": inside, "total": total})


@register_metric("pointing_game", higher_is_better=True, paper="Zhang et al. 2018 (pointing game)",
                 defaults={"tolerance": 0},
                 description="1 if the map's maximum lies in the mask (ties: fraction of maxima inside)")
class PointingGame(Metric):
    """Pointing game on ground-truth masks; ties scored by the fraction of maxima inside."""

    needs_mask = True

    def evaluate(self, ctx: EvalContext, attribution: Tensor) -> MetricOutput:
        mask = ctx.batch.mask
        if mask is None:
            return _no_mask_output(attribution.shape[0], attribution.device)
        hits, status = pointing_game_score(attribution, mask, tolerance=int(self.params.get("tolerance", 0)),
                                           tie_eps=float(self.params.get("tie_eps", 0.0)))
        return MetricOutput(values=hits, status=status)


# -- report: box plots, AggAtt, Spearman, smoothing sweep ----------------------------------

def _manifest(results_dir: Path) -> dict[str, Any]:
    p = Path(results_dir) / "run.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}


def _metric_names_of(cls: type, scores, manifest: dict[str, Any]) -> list[str]:
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


def _cell_of(sample_id: str) -> int | None:
    m = re.search(r"c(\d+)$", str(sample_id))
    return int(m.group(1)) if m else None


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

    from saliencybench.core.registry import METHODS

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
    """003 Fig. 9: localization per method x layer, one panel per setting, with the random
    (1/n^2) and perfect (1.0) lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saliencybench.benchmark.report.plots import save_figure

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


def align_to_top_left(maps: Tensor, cells: list[int], n: int) -> Tensor:
    """Cyclically shift each map by whole cells so that its scored cell becomes the top-left
    one (a permutation of the cells: localization w.r.t. the moved cell is unchanged)."""
    h, w = maps.shape[-2] // n, maps.shape[-1] // n
    out = maps.clone()
    for c in sorted(set(cells)):
        idx = torch.as_tensor([i for i, ci in enumerate(cells) if ci == c])
        r, cc = divmod(int(c), n)
        out[idx] = torch.roll(maps[idx], shifts=(-r * h, -cc * w), dims=(-2, -1))
    return out


def localization_report(results_dir: Path, scores, cache, *, metric_class: type = Localization,
                        aggatt_cell: int | str = "align", sweep_reference: str = "gradcam@final") -> list[Path]:
    """Write the localization figures and CSVs into ``results_dir/figures``; return paths.

    - ``localization_table.csv`` (+ ``.md``): mean / median / std per setting x model x
      method x layer; ``localization_boxes_<model>.png`` (003 Fig. 9).
    - ``aggatt_<setting>_<model>.png``, ``aggatt_examples_<setting>_<model>.png`` (the map
      of each bin's median sample) and ``aggatt_bins.csv`` (003 Fig. 12, supp. §H.4), from
      the cached maps. The paper's figures show the scored cell at the top-left. The default
      ``aggatt_cell="align"`` uses every scored cell, each map shifted by whole cells so its
      target is top-left (:func:`align_to_top_left`), which multiplies the maps per bin by
      n*n (GridPG) or 2 (DiFull / DiPart) for small runs; ``aggatt_cell=k`` keeps only the
      maps scored at cell k, in place (the official code's ``head_pos_idx``);
      ``aggatt_cell="all"`` keeps every map in place, each scored against its own cell.
    - ``spearman_<setting>_<model>.csv/.png`` (003 Fig. 19).
    - ``kernel_sweep.csv`` (+ ``.md``) when smoothed S-IntGrad / S-IxG aliases were run
      (003 supp. Tables 1-2).
    """
    import pandas as pd

    from saliencybench.benchmark.report.aggatt import (
        DEFAULT_PERCENTILES,
        aggatt_bins,
        bin_median_positions,
        bin_scores,
        plot_aggatt,
        plot_aggatt_examples,
        sort_by_localization,
    )
    from saliencybench.benchmark.report.spearman import kernel_sweep_table, plot_spearman, spearman_matrix
    from saliencybench.models.grid_settings import cell_masks

    manifest = _manifest(results_dir)
    names = _metric_names_of(metric_class, scores, manifest)
    df = annotate_scores(scores, names, manifest)
    if df.empty:
        return []
    fig_dir = Path(results_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    table = localization_table(df)
    p = fig_dir / "localization_table.csv"
    table.to_csv(p, index=False, float_format="%.4f")
    paths.append(p)
    status = localization_status(scores, names, manifest)
    p = fig_dir / "localization_status.csv"
    status.to_csv(p, index=False)
    paths.append(p)
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
    paths.append(md)

    for model, sub in df.groupby("model", sort=False):
        paths.append(plot_localization_boxes(sub, fig_dir / f"localization_boxes_{safe_filename(model)}.png", model=model))

    # AggAtt from cached maps
    bin_rows = []
    if cache is not None:
        for (setting, model, dataset), sub in df.groupby(["setting", "model", "dataset"], sort=False):
            n = int(sub["n"].iloc[0])
            rows: dict[str, Tensor] = {}
            examples: dict[str, Tensor] = {}
            for method in _label_order(sub):
                try:
                    ids, maps = cache.load(dataset, model, method)
                except Exception:  # nothing cached for this method (failed or not cached)
                    continue
                cells = [_cell_of(sid) for sid in ids]
                keep = [i for i, c in enumerate(cells)
                        if c is not None and (aggatt_cell in ("align", "all") or c == int(aggatt_cell))]
                if not keep:
                    continue
                maps = maps[torch.as_tensor(keep)].float()
                all_masks = cell_masks(maps.shape[-2:], n)
                if aggatt_cell == "align":
                    maps = align_to_top_left(maps, [cells[i] for i in keep], n)
                    mask = all_masks[0].expand(maps.shape[0], 1, -1, -1)
                elif aggatt_cell == "all":
                    mask = all_masks[torch.as_tensor([cells[i] for i in keep])]
                else:
                    mask = all_masks[int(aggatt_cell)].expand(maps.shape[0], 1, -1, -1)
                score, inside, _ = localization_parts(maps, mask)
                means, ranges = aggatt_bins(maps, score, inside, DEFAULT_PERCENTILES)
                rows[method] = means
                order = sort_by_localization(score, inside)
                medians = bin_median_positions(ranges)
                examples[method] = torch.stack([
                    maps[int(order[m])] if m is not None else torch.zeros_like(maps[0]) for m in medians])
                for b, (info, (a, e)) in enumerate(zip(bin_scores(score, inside, ranges), ranges)):
                    med = medians[b]
                    bin_rows.append({"setting": setting, "model": model, "dataset": dataset, "method": method,
                                     "bin": b, "pct_lo": DEFAULT_PERCENTILES[b], "pct_hi": DEFAULT_PERCENTILES[b + 1],
                                     **info, "median_sample_id": "" if med is None else ids[keep[int(order[med])]]})
            if rows:
                view = {"align": "scored cell moved to the top-left", "all": "every cell in place"}.get(
                    str(aggatt_cell), f"cell {aggatt_cell} only")
                box = 0 if aggatt_cell in ("align", "all") else int(aggatt_cell)
                paths.append(plot_aggatt(rows, fig_dir / f"aggatt_{safe_filename(setting)}_{safe_filename(model)}.png",
                                         title=f"AggAtt {setting} {model} ({view})", n=n,
                                         cell=box if aggatt_cell != "all" else -1))
                paths.append(plot_aggatt_examples(
                    examples, fig_dir / f"aggatt_examples_{safe_filename(setting)}_{safe_filename(model)}.png",
                    title=f"AggAtt examples {setting} {model}: map of each bin's median sample ({view})",
                    n=n, cell=box if aggatt_cell != "all" else -1))
    if bin_rows:
        p = fig_dir / "aggatt_bins.csv"
        pd.DataFrame(bin_rows).to_csv(p, index=False, float_format="%.4f")
        paths.append(p)

    # Spearman matrices and the smoothing sweep
    for (setting, model), sub in df.groupby(["setting", "model"], sort=False):
        if sub["method"].nunique() < 2:
            continue
        mat = spearman_matrix(sub, label="method", order=_label_order(sub))
        stem = f"spearman_{safe_filename(setting)}_{safe_filename(model)}"
        mat.to_csv(fig_dir / f"{stem}.csv", float_format="%.4f")
        paths.append(fig_dir / f"{stem}.csv")
        paths.append(plot_spearman(mat, fig_dir / f"{stem}.png", title=f"Spearman's rho, {setting}, {model}"))
    grid_pg = df[df["setting"] == "gridpg"]
    if len(grid_pg):
        sweep = kernel_sweep_table(grid_pg, reference=sweep_reference, label="method", group="model")
        if len(sweep) and any(str(c).startswith("K=") for c in sweep.columns):
            p = fig_dir / "kernel_sweep.csv"
            sweep.to_csv(p, index=False, float_format="%.4f")
            paths.append(p)
            md = fig_dir / "kernel_sweep.md"
            md.write_text(_df_markdown(sweep))
            paths.append(md)
    return paths


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
