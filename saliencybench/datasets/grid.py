"""Grid datasets for GridPG, DiFull and DiPart (Rao et al. 2022, supp. §H.1 and §I.1).

A grid is an n x n composite of images that the base model classifies correctly with
softmax confidence at least ``threshold`` (default 0.99), each cell from a distinct class;
for DiFull and DiPart the bottom-right cell repeats the top-left class (the other cells
are distinct classes) and only those two corners are scored.

Each *sample* is one (grid, scored cell): ``x`` is the composite (normalised), ``y`` the
combined target ``cell * K + class`` (K = base classes) read from the wrapped model's
``(B, n*n*K)`` output (:mod:`saliencybench.models.grid_settings`), ``mask`` the (1,H,W)
binary mask of the scored cell. The returned :class:`GridSampleSet` sets ``wrap_model`` (the
optional field of :class:`~saliencybench.core.types.SampleSet`), which the runner applies to
the base model.

Direction of imports: ``datasets`` may import ``models`` (this module wraps a base model in
its grid setting, :mod:`saliencybench.models.grid_settings`); ``models`` never imports
``datasets``.

Selection and layout are deterministic given ``seed``. Rao et al. 2022 (supp. §H.1 and the
official code) keep the images that *every* compared model classifies correctly with
confidence >= 0.99, screened over the whole validation set, so all models see the same
grids: ``select_models="suite"`` (or a list of model specs) screens the base images with each
of those models (once per suite: the runner keeps the confidences in memory and under
``<out>/grid_screening/``) and keeps the images that all of them classify confidently. When
too few images reach the threshold, ``min_confidence_fallback=True`` (the default suites)
lowers it along :data:`THRESHOLD_SCHEDULE` with a warning; ``False`` (the paper suites) raises
:class:`GridSelectionError` instead. The threshold used and all counts are recorded in
``info``. Images are not reused across grids while unused
confident images of the class remain; after that they are reused (counted in ``info``),
never twice within one grid.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from saliencybench.core.errors import GridSelectionError
from saliencybench.core.registry import DATASETS, register_dataset
from saliencybench.core.types import Batch, Normalization, SampleSet
from saliencybench.models.grid_settings import SETTINGS, GridSetting, cell_masks, cells_to_grid

#: Thresholds tried, in order, below the requested one when too few images qualify
#: (0.0 = correctly classified at any confidence).
THRESHOLD_SCHEDULE = (0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.0)


class GridThresholdWarning(UserWarning):
    """The confidence threshold was lowered because too few images qualified."""


def scored_cells(setting: str, n: int) -> list[int]:
    """Cells evaluated per grid: all for GridPG; top-left and bottom-right for DiFull/DiPart."""
    return list(range(n * n)) if setting == "gridpg" else [0, n * n - 1]


@torch.no_grad()
def confidence_of_label(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256,
                        device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """(softmax probability of the label, correct?) per image, batched forwards (CPU out)."""
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    probs, correct = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device)
        yb = y[i:i + batch_size].to(device)
        logits = model(xb).float()
        pr = logits.softmax(-1)
        probs.append(pr.gather(1, yb.view(-1, 1)).squeeze(1).cpu())
        correct.append((logits.argmax(1) == yb).cpu())
    return torch.cat(probs), torch.cat(correct)


def choose_threshold(prob: Tensor, correct: Tensor, labels: Tensor, threshold: float, *,
                     needed_images: int, needed_classes: int, repeat_class: bool) -> tuple[float, Tensor]:
    """Highest threshold (requested, then :data:`THRESHOLD_SCHEDULE` below it) at which
    enough images qualify; returns (threshold, qualifying mask).

    Enough = at least ``needed_images`` images, from at least ``needed_classes`` classes,
    and (``repeat_class``, DiFull/DiPart) some class with two images. If none suffices the
    last candidate (0.0: correct at any confidence) is returned.
    """
    candidates = [float(threshold)] + [t for t in THRESHOLD_SCHEDULE if t < threshold]
    ok = correct.bool()
    for t in candidates:
        q = ok & (prob >= t)
        counts = torch.bincount(labels[q], minlength=int(labels.max()) + 1 if labels.numel() else 1)
        enough = (int(q.sum()) >= needed_images and int((counts > 0).sum()) >= needed_classes
                  and (not repeat_class or bool((counts >= 2).any())))
        if enough:
            return t, q
    return candidates[-1], ok & (prob >= candidates[-1])


class _ClassPools:
    """Per-class queues of image indices (seeded order); reuse only once a class is exhausted."""

    def __init__(self, by_class: dict[int, list[int]], g: torch.Generator) -> None:
        self.pools = {c: [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
                      for c, idx in by_class.items()}
        self.used = {c: 0 for c in self.pools}
        self.reused = 0

    def remaining(self, c: int) -> int:
        return max(0, len(self.pools[c]) - self.used[c])

    def take(self, c: int, exclude: set[int]) -> int:
        pool = self.pools[c]
        for _ in range(len(pool)):
            k = self.used[c]
            self.used[c] += 1
            idx = pool[k % len(pool)]
            if k >= len(pool):
                self.reused += 1
            if idx not in exclude:
                return idx
        raise ValueError(f"class {c} has too few images for this grid")


def layout_grids(labels: Tensor, qualifying: Tensor, n_grids: int, n: int, setting: str,
                 seed: int) -> tuple[list[list[int]], int]:
    """Choose source image indices for each grid cell (row-major); deterministic in ``seed``.

    GridPG: n*n distinct classes per grid. DiFull/DiPart: the top-left class is repeated
    bottom-right (two different images), the other n*n-2 cells are distinct other classes.
    Classes are drawn with probability favouring those with most unused images, so images
    are spread evenly. Returns (grids, number of image reuses).
    """
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.nonzero(qualifying).view(-1).tolist()
    by_class: dict[int, list[int]] = {}
    for i in idx:
        by_class.setdefault(int(labels[i]), []).append(i)
    classes = sorted(by_class)
    distinct = n * n if setting == "gridpg" else n * n - 1
    if len(classes) < distinct:
        raise ValueError(
            f"{setting} {n}x{n} grids need {distinct} distinct classes with qualifying images; "
            f"only {len(classes)} available"
        )
    pools = _ClassPools(by_class, g)
    grids: list[list[int]] = []
    for _ in range(n_grids):
        weights = torch.tensor([pools.remaining(c) + 1e-3 for c in classes], dtype=torch.float64)
        if setting != "gridpg":
            # the repeated class needs two images: pick it first among classes with >= 2
            two = torch.tensor([len(by_class[c]) >= 2 for c in classes], dtype=torch.float64)
            if two.sum() == 0:
                raise ValueError("DiFull/DiPart need a class with two qualifying images")
            first = classes[int(torch.multinomial(weights * two, 1, generator=g))]
            weights[classes.index(first)] = 0.0
            others = torch.multinomial(weights, distinct - 1, replacement=False, generator=g).tolist()
            cls = [first] + [classes[i] for i in others]
            cell_classes = cls[:n * n - 1] + [first]
        else:
            pick = torch.multinomial(weights, distinct, replacement=False, generator=g).tolist()
            cell_classes = [classes[i] for i in pick]
        used: set[int] = set()
        cells = []
        for c in cell_classes:
            i = pools.take(c, used)
            used.add(i)
            cells.append(i)
        grids.append(cells)
    return grids, pools.reused


@dataclass(frozen=True)
class GridSpec:
    """What a grid dataset's composites are: the setting, the grid side ``n``, the base
    dataset's class count, normalisation and class names, and the GridPG head mode."""

    setting: str
    n: int
    base_classes: int
    normalization: Normalization
    class_names: tuple[str, ...] | None = None
    head: str = "global"


class GridSampleSet(SampleSet):
    """Samples (grid, scored cell) built on demand from the stored grids (no n*n copies).

    ``x`` / ``y`` / ``mask`` are materialised only when read as attributes; :meth:`get`
    builds a batch from the grid tensor directly. ``wrap_model`` (the :class:`SampleSet`
    field) builds the setting's :class:`GridSetting` around a base model; the runner applies it.
    """

    def __init__(self, grids: Tensor, grid_index: Tensor, cell_index: Tensor, labels: Tensor, spec: GridSpec, *,
                 sample_ids: Sequence[str], name: str = "", info: dict[str, Any] | None = None) -> None:
        self.grids = grids
        self.grid_index = grid_index.long()
        self.cell_index = cell_index.long()
        self.cell_labels = labels.long()
        self.spec = spec
        self.n = int(spec.n)
        self.setting = spec.setting
        self.base_classes = int(spec.base_classes)
        self._masks = cell_masks(grids.shape[-2:], self.n)
        self.normalization = spec.normalization
        self.num_classes = self.n * self.n * self.base_classes
        self.sample_ids = list(sample_ids)
        self.name = name
        self.class_names = list(spec.class_names) if spec.class_names is not None else None
        self.info = dict(info or {})
        cell = (self.image_size[0] // self.n, self.image_size[1] // self.n)
        head = {"head": spec.head} if spec.setting == "gridpg" else {}
        self.wrap_model = functools.partial(GridSetting, setting=self.setting, n=self.n, cell_size=cell, **head)

    def __len__(self) -> int:
        return int(self.grid_index.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.grids.shape[-2]), int(self.grids.shape[-1])

    # the SampleSet attributes, materialised on demand
    @property
    def x(self) -> Tensor:  # type: ignore[override]
        return self.grids[self.grid_index]

    @property
    def y(self) -> Tensor:  # type: ignore[override]
        return self.cell_index * self.base_classes + self.cell_labels

    @property
    def mask(self) -> Tensor:  # type: ignore[override]
        return self._masks[self.cell_index]

    def get(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        cells = self.cell_index[idx]
        targets = cells * self.base_classes + self.cell_labels[idx]
        ids = [self.sample_ids[i] for i in idx.tolist()]
        return Batch(self.grids[self.grid_index[idx]], targets, ids, self._masks[cells])

    def subset(self, indices: Sequence[int]) -> "GridSampleSet":
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return GridSampleSet(self.grids, self.grid_index[idx], self.cell_index[idx], self.cell_labels[idx], self.spec,
                             sample_ids=[self.sample_ids[i] for i in idx.tolist()], name=self.name, info=self.info)


@dataclass(frozen=True)
class GridOptions:
    """How grids are selected and laid out (the parameters of :func:`build_grid_samples`).

    - ``setting``: gridpg / difull / dipart; ``n``: grid side;
    - ``n_samples``: number of (grid, cell) samples (GridPG: n*n per grid; DiFull/DiPart: 2);
      None = as many grids as the qualifying images allow without reuse;
    - ``seed``: the layout's seed;
    - ``threshold``: minimum softmax confidence of the label (lowered with a warning when too
      few images qualify and ``min_confidence_fallback``, see :func:`choose_threshold`;
      otherwise :class:`GridSelectionError`); ``min_confidence_fallback``: True for the default
      suites, False for the paper suites;
    - ``head``: GridPG head mode passed to :class:`GridSetting`;
    - ``batch_size``, ``device``: of the screening forwards.
    """

    setting: str = "gridpg"
    n: int = 2
    n_samples: int | None = 64
    seed: int = 0
    threshold: float = 0.99
    head: str = "global"
    min_confidence_fallback: bool = True
    batch_size: int = 256
    device: torch.device | str | None = None


def _screen(base: SampleSet, model: nn.Module | None, opts: GridOptions,
            screening: dict[str, tuple[Tensor, Tensor]] | None) -> dict[str, tuple[Tensor, Tensor]]:
    if screening is not None:
        return screening
    if model is None:
        raise ValueError("build_grid_samples needs a model or a screening")
    return {"model": confidence_of_label(model, base.x, base.y.long(), batch_size=opts.batch_size,
                                         device=opts.device)}


def _select(base: SampleSet, screening: dict[str, tuple[Tensor, Tensor]], opts: GridOptions,
            needed: int) -> tuple[float, Tensor, Tensor]:
    """(threshold used, qualifying mask, correct-for-every-model mask) over ``base``."""
    n, setting, threshold = opts.n, opts.setting, opts.threshold
    labels = base.y.long()
    prob = torch.stack([p.float() for p, _ in screening.values()]).min(0).values  # >= t for every model
    correct = torch.stack([c.bool() for _, c in screening.values()]).all(0)
    distinct = n * n if setting == "gridpg" else n * n - 1
    used_t, qualifying = choose_threshold(prob, correct, labels, threshold, needed_images=needed,
                                          needed_classes=distinct, repeat_class=setting != "gridpg")
    if used_t < threshold and not opts.min_confidence_fallback:
        at_t = correct & (prob >= threshold)
        n_cls = int(labels[at_t].unique().numel())
        raise GridSelectionError(
            f"grid dataset ({setting}, {n}x{n}): only {int(at_t.sum())} of {len(base)} images "
            f"({n_cls} classes) are classified correctly with confidence >= {threshold} by every "
            f"model ({', '.join(screening)}); {needed} cells from >= {distinct} classes are needed. "
            "Lower n_samples, screen more images (pool), or set min_confidence_fallback = true "
            "to lower the threshold with a warning")
    if used_t < threshold:
        warnings.warn(
            f"grid dataset ({setting}, {n}x{n}): too few images classified correctly with confidence "
            f">= {threshold} for {needed} cells; threshold lowered to {used_t} ({int(qualifying.sum())} images "
            "qualify)", GridThresholdWarning, stacklevel=3,
        )
    return used_t, qualifying, correct


def build_grid_samples(base: SampleSet, model: nn.Module | None, options: GridOptions | None = None, *,
                       name: str = "", screening: dict[str, tuple[Tensor, Tensor]] | None = None) -> GridSampleSet:
    """Grid samples for ``options.setting`` from the images of ``base`` that ``model`` gets right.

    Args:
        base: single-image dataset (normalised x, labels).
        model: base classifier (eval); used for the confidence selection only.
        options: :class:`GridOptions` (setting, n, n_samples, seed, threshold, ...).
        name: the dataset name (default ``<setting>_<base name>``).
        screening: ``{model spec: (probability of the label, correct?)}`` over ``base``,
            precomputed; an image qualifies only when *every* model classifies it correctly
            with confidence >= threshold (Rao et al. 2022 supp. §H.1). None: screen with
            ``model`` alone.
    """
    opts = options or GridOptions()
    opts = replace(opts, setting=opts.setting.lower())
    if opts.setting not in SETTINGS:
        raise ValueError(f"unknown grid setting '{opts.setting}'; use one of {SETTINGS}")
    n, per_grid = opts.n, scored_cells(opts.setting, opts.n)
    screening = _screen(base, model, opts, screening)
    n_grids = None if opts.n_samples is None else max(1, math.ceil(int(opts.n_samples) / len(per_grid)))
    used_t, qualifying, correct = _select(base, screening, opts, n * n if n_grids is None else n_grids * n * n)
    n_qual = int(qualifying.sum())
    if n_grids is None:
        n_grids = max(1, n_qual // (n * n))
    grids_src, reused = layout_grids(base.y.long(), qualifying, n_grids, n, opts.setting, opts.seed)
    if reused:
        warnings.warn(f"grid dataset ({opts.setting}): {reused} cell images reused across grids "
                      f"({n_qual} qualifying images for {n_grids * n * n} cells)", GridThresholdWarning,
                      stacklevel=2)
    src = torch.tensor(grids_src, dtype=torch.long)  # (G, n*n)
    grids = cells_to_grid(base.x[src.view(-1)], n).contiguous()  # cells (G*n*n, C, h, w) row-major per grid
    g_idx = torch.arange(n_grids).repeat_interleave(len(per_grid))
    c_idx = torch.tensor(per_grid * n_grids, dtype=torch.long)
    if opts.n_samples is not None:
        g_idx, c_idx = g_idx[: int(opts.n_samples)], c_idx[: int(opts.n_samples)]
    info = {
        "setting": opts.setting, "grid_n": n, "base": base.name, "base_size": len(base),
        "threshold_requested": float(opts.threshold), "threshold_used": float(used_t),
        "n_qualifying": n_qual, "n_correct": int(correct.sum()), "n_grids": int(n_grids),
        "n_cells_reused": int(reused), "scored_cells": per_grid, "seed": opts.seed, "head": opts.head,
        "selection_models": list(screening), "min_confidence_fallback": bool(opts.min_confidence_fallback),
        "n_qualifying_per_model": {k: int((c.bool() & (p >= used_t)).sum()) for k, (p, c) in screening.items()},
        "grid_sources": [[base.sample_ids[i] for i in row] for row in grids_src],
    }
    spec = GridSpec(opts.setting, n, base.num_classes, base.normalization,
                    tuple(base.class_names) if base.class_names is not None else None, opts.head)
    return GridSampleSet(grids, g_idx, c_idx, base.y.long()[src][g_idx, c_idx], spec,
                         sample_ids=[f"g{g:05d}c{c}" for g, c in zip(g_idx.tolist(), c_idx.tolist())],
                         name=name or f"{opts.setting}_{base.name}", info=info)


@dataclass(frozen=True)
class GridSource:
    """Where the base images of :func:`grid` come from and which models screen them.

    ``pool`` limits how many base images are screened (None = the whole split).
    ``select_models``: None = screen with the model alone; ``"suite"`` = with every model of
    the suite, a list = with those specs; the grids are then the same for every model (Rao et
    al. 2022 supp. §H.1). ``model_name`` is the spec of the model the dataset is built for.
    """

    source: str = "synthetic"
    split: str = "test"
    pool: int | None = None
    source_kwargs: dict[str, Any] | None = None
    select_models: str | Sequence[str] | None = None
    model_name: str = ""


def _call_base_factory(src: GridSource, seed: int) -> SampleSet:
    fn = DATASETS.get(src.source).obj
    kw: dict[str, Any] = {"split": src.split, "seed": seed, "n_samples": src.pool, **(src.source_kwargs or {})}
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kw = {k: v for k, v in kw.items() if k in params}
    return fn(**kw)


def _split_params(params: dict[str, Any]) -> tuple[GridOptions, GridSource]:
    """The suite's dataset parameters as (options, source); other keys are ignored."""
    pick = {cls: {f.name for f in fields(cls)} for cls in (GridOptions, GridSource)}
    return (GridOptions(**{k: v for k, v in params.items() if k in pick[GridOptions]}),
            GridSource(**{k: v for k, v in params.items() if k in pick[GridSource]}))


def grid(*, model: nn.Module | None = None, suite_models: Sequence[str] | None = None, load_model: Any = None,
         screen_cache: "ScreeningCache | None" = None, **params: Any) -> GridSampleSet:
    """Generic grid dataset factory: ``source`` dataset x ``setting`` x ``n``.

    ``params`` are the fields of :class:`GridOptions` (setting, n, n_samples, seed, threshold,
    head, min_confidence_fallback, batch_size, device) and of :class:`GridSource` (source,
    split, pool, source_kwargs, select_models, model_name); other keys are ignored.
    With ``select_models="suite"`` the models are ``suite_models``, built by
    ``load_model(spec)``. ``screen_cache`` keeps each model's confidences so that a suite
    screens once per model.
    """
    opts, src = _split_params(params)
    base = _call_base_factory(src, opts.seed)
    screening = None
    if src.select_models is not None:
        if src.select_models == "suite":
            if not suite_models:
                raise ValueError("select_models = 'suite' needs the suite's models (run it through the runner)")
            specs = list(suite_models)
        else:
            specs = [src.select_models] if isinstance(src.select_models, str) else list(src.select_models)
        cache = screen_cache if screen_cache is not None else ScreeningCache()
        key = cache.key(source=src.source, split=src.split, pool=src.pool, seed=opts.seed,
                        source_kwargs=src.source_kwargs, sample_ids=base.sample_ids)
        screening = {}
        for spec in specs:
            def compute(spec=spec):
                m = model if spec == src.model_name else None
                if m is None:
                    if load_model is None:
                        raise ValueError(f"cannot build model {spec!r} for the grid selection")
                    m = load_model(spec)
                return confidence_of_label(m, base.x, base.y.long(), batch_size=opts.batch_size, device=opts.device)
            screening[spec] = cache.get(key, spec, compute)
    out = build_grid_samples(base, model, opts, name=f"{opts.setting}_{src.source}", screening=screening)
    out.info.update({"source": src.source, "split": src.split, "model": src.model_name, "pool": src.pool})
    return out


class ScreeningCache:
    """Confidences of the label per (base image set, model), in memory and optionally on disk
    (``directory``/<key>__<model>.pt), so that a suite screens each model once."""

    def __init__(self, directory: Any = None) -> None:
        self.directory = directory
        self.memory: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}
        self.computed = 0

    @staticmethod
    def key(**parts: Any) -> str:
        import hashlib
        import json

        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def get(self, key: str, spec: str, compute: Any) -> tuple[Tensor, Tensor]:
        from pathlib import Path

        if (key, spec) in self.memory:
            return self.memory[(key, spec)]
        path = None
        if self.directory is not None:
            safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in spec)
            path = Path(self.directory) / f"{key}__{safe}.pt"
            if path.is_file():
                try:
                    val = torch.load(path)
                    self.memory[(key, spec)] = (val["prob"], val["correct"])
                    return self.memory[(key, spec)]
                except Exception:  # unreadable: recompute
                    pass
        prob, correct = compute()
        self.computed += 1
        self.memory[(key, spec)] = (prob, correct)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"prob": prob, "correct": correct}, tmp)
            tmp.replace(path)
        return prob, correct


register_dataset("grid", needs_model=True, setting=None, base=None, n=2,
                 description="n x n grid composites (GridPG / DiFull / DiPart) of any dataset")(grid)

for _setting in SETTINGS:
    register_dataset(
        f"{_setting}_synthetic", needs_model=True, setting=_setting, base="synthetic", n=2,
        paper="Rao et al. 2022", description=f"{_setting} 2x2 grids of the synthetic dataset",
    )(functools.partial(grid, source="synthetic", setting=_setting, n=2))
