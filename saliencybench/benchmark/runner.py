"""The benchmark runner: datasets x models x methods x metrics -> results directory.

Data flow: for each (dataset, model) the samples are loaded once; for each
method the attributions are computed in batches **once** into the attribution cache; for each
group of metrics that can share forward passes the metrics are evaluated from the cached maps;
per-chunk result parts are written atomically, so an interrupted run resumes where it stopped
and `compare` reuses every part it already has. No metric recomputes an attribution.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from saliencybench.attributions.base import compute_attribution, finish_attribution, raw_attribution
from saliencybench.benchmark.config import SuiteConfig, split_spec
from saliencybench.benchmark.jobs import ChunkInputs, ChunkJob, GroupJob, MethodJob, PairJob
from saliencybench.benchmark.manifest import environment_info
from saliencybench.benchmark.reuse import Reuse, setup_of
from saliencybench.benchmark.store import AttributionCache, ResultStore
from saliencybench.core.errors import ConfigError, NotApplicableError
from saliencybench.core.guard import model_guard
from saliencybench.core.io import write_json
from saliencybench.core.registry import DATASETS, METHODS, METRICS, MODELS, Entry, populate
from saliencybench.core.seeding import stable_seed
from saliencybench.core.tensors import as_map_batch, autocast, exact_fp32
from saliencybench.core.types import Batch, EvalContext, MetricOutput, SampleSet
from saliencybench.metrics.base import Metric
from saliencybench.metrics.pixel_perturbation import PerturbationCurve


@dataclass
class ResolvedSuite:
    """Names after wildcard and alias expansion, with their registry entries."""

    cfg: SuiteConfig
    datasets: list[str]
    models: list[str]
    methods: list[str]
    metrics: list[str]
    #: method entries that live outside the registry (precomputed maps of the Python API)
    extra_methods: dict[str, Entry] = field(default_factory=dict)

    def method_entry(self, name: str) -> Entry:
        if name in self.extra_methods:
            return self.extra_methods[name]
        return METHODS.get(self.cfg.method_base(name))

    def metric_entry(self, name: str) -> Entry:
        return METRICS.get(self.cfg.metric_base(name))


def _expand(names: Sequence[str], registry, aliases: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for item in names:
        if item in aliases and "base" in aliases[item]:
            registry.get(str(aliases[item]["base"]))  # validate the base now
            found = [item]
        else:
            found = registry.resolve(item)
        out.extend(f for f in found if f not in out)
    return out


def resolve_suite(cfg: SuiteConfig, *, models: Sequence[str] = (), datasets: Sequence[str] = (),
                  extra_methods: dict[str, Entry] | None = None) -> ResolvedSuite:
    """Validate every name of a suite against the registries (raises with suggestions).

    ``models`` / ``datasets`` name in-memory objects the runner was given (they need no
    registry entry); ``extra_methods`` are method entries outside the registry.
    """
    populate()
    extra_methods = dict(extra_methods or {})
    if not cfg.models:
        raise ConfigError("the suite lists no models")
    if not cfg.methods:
        raise ConfigError("the suite lists no methods")
    if not cfg.metrics:
        raise ConfigError("the suite lists no metrics")
    datasets_out: list[str] = []
    for item in cfg.datasets:
        found = [item] if item in datasets else _expand([item], DATASETS, cfg.dataset_params)
        datasets_out.extend(f for f in found if f not in datasets_out)
    in_memory_models = set(models)
    models = []
    for spec in cfg.models:
        name, _ = split_spec(spec)
        if spec in in_memory_models:
            models.append(spec)
        elif any(ch in name for ch in "*?["):
            models.extend(m for m in MODELS.resolve(name) if m not in models)
        else:
            MODELS.get(name)
            models.append(spec)
    methods = []
    for item in cfg.methods:
        found = [item] if item in extra_methods else _expand([item], METHODS, cfg.method_params)
        methods.extend(f for f in found if f not in methods)
    metrics = _expand(cfg.metrics, METRICS, cfg.metric_params)
    return ResolvedSuite(cfg, datasets_out, models, methods, metrics, extra_methods)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but CUDA is not available on this machine")
    return torch.device(device)


def build_model(spec: str, cfg: SuiteConfig, device: torch.device) -> tuple[nn.Module, Entry]:
    name, weights = split_spec(spec)
    entry = MODELS.get(name)
    kw = dict(cfg.model_params.get(spec, cfg.model_params.get(name, {})))
    if weights is not None:
        kw["weights"] = weights
    model = entry.obj(**kw)
    model = model.to(device).eval()
    return model, entry


def build_samples(ds_name: str, cfg: SuiteConfig, model: nn.Module, model_spec: str,
                  device: torch.device, *, suite_models: list[str] | None = None,
                  screen_cache: Any = None) -> SampleSet:
    base = cfg.dataset_params.get(ds_name, {}).get("base") if ds_name in cfg.dataset_params else None
    entry = DATASETS.get(base or ds_name)
    kw = {k: v for k, v in cfg.dataset_params.get(ds_name, {}).items() if k != "base"}
    kw.setdefault("n_samples", cfg.n_samples)
    kw.setdefault("seed", cfg.seed)
    if entry.meta.get("needs_model"):
        kw.update(model=model, model_name=model_spec, device=device)
        # grid datasets selecting images with every model of the suite (Rao et al. 2022)
        params = inspect.signature(entry.obj).parameters
        if "suite_models" in params:
            kw.update(suite_models=list(suite_models or [model_spec]),
                      load_model=lambda spec: build_model(spec, cfg, device)[0])
        if "screen_cache" in params and screen_cache is not None:
            kw.update(screen_cache=screen_cache)
    for key, value in model_input_size(entry.obj, model).items():
        kw.setdefault(key, value)
    samples = entry.obj(**kw)
    if not isinstance(samples, SampleSet):
        raise TypeError(f"dataset '{ds_name}' returned {type(samples).__name__}, expected a SampleSet")
    samples.name = ds_name
    return match_normalization(samples, model)


def model_input_size(factory: Callable[..., Any], model: nn.Module) -> dict[str, int]:
    """``image_size`` / ``resize_size`` for an ImageNet-style dataset factory from the model's
    data config (timm models: input size and crop fraction of the pretrained configuration).

    Empty unless the model carries ``sb_info["data_config"]`` with a square input and a center
    crop and the factory takes both parameters; a suite's own values win (``setdefault``).
    """
    import math

    info = getattr(model, "sb_info", None)
    dcfg = info.get("data_config") if isinstance(info, dict) else None
    if not dcfg:
        return {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if "image_size" not in params or "resize_size" not in params:
        return {}
    h, w = (int(v) for v in dcfg["input_size"][-2:])
    if h != w or dcfg.get("crop_mode", "center") != "center":
        return {}
    return {"image_size": h, "resize_size": int(math.floor(h / float(dcfg.get("crop_pct", 0.875))))}


def match_normalization(samples: SampleSet, model: nn.Module) -> SampleSet:
    """Re-normalise ``samples`` to the mean / std the model expects (``model.sb_normalization``,
    set by the timm models from their pretrained configuration); unchanged when it has none or
    they already match. Pixels are the same, only the normalised encoding changes, so pixel-space
    substrates (black, blur) stay what they were.

    Grid datasets screen their cells with the model before this step, in the source dataset's
    normalisation; their composites are converted like any other sample.
    """
    target = getattr(model, "sb_normalization", None)
    source = samples.normalization
    if target is None or (np.allclose(target.mean, source.mean) and np.allclose(target.std, source.std)):
        return samples

    def convert(x: Tensor) -> Tensor:
        return target.from_pixel(source.to_pixel(x))

    if isinstance(getattr(samples, "grids", None), Tensor):
        samples.grids = convert(samples.grids)
    elif isinstance(samples.__dict__.get("x"), Tensor):
        samples.x = convert(samples.x)
    else:
        raise TypeError(f"cannot re-normalise a {type(samples).__name__} for this model: it has no x tensor; "
                        f"build the dataset with the model's mean {target.mean} and std {target.std}")
    samples.normalization = target
    samples.info = {**samples.info, "normalization_from_model": {"mean": list(target.mean), "std": list(target.std)}}
    return samples


@dataclass
class RunStats:
    attribution_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    attribution_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    metric_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    forwards: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    parts_computed: int = 0
    parts_reused: int = 0
    failures: list[str] = field(default_factory=list)


def predicted_classes(model: nn.Module, x: Tensor, max_batch: int, device: torch.device | None = None) -> Tensor:
    """The model's arg-max class per input, in batches of ``max_batch`` (on ``device`` if given)."""
    with torch.no_grad():
        preds = [model(x[i:i + max_batch] if device is None else x[i:i + max_batch].to(device)).argmax(1)
                 for i in range(0, x.shape[0], max_batch)]
    return torch.cat(preds)


def _targets(model: nn.Module, batch: Batch, mode: str, max_batch: int) -> Tensor:
    return batch.y if mode == "label" else predicted_classes(model, batch.x, max_batch)


def _sanitize(maps: Tensor, x: Tensor) -> tuple[Tensor, list[str]]:
    """Replace non-finite maps by zeros and say which samples they were (status column)."""
    if maps.shape[0] != x.shape[0] or maps.shape[-2:] != x.shape[-2:] or maps.ndim != 4:
        raise ValueError(f"attribution shape {tuple(maps.shape)} does not fit input {tuple(x.shape)}")
    finite = torch.isfinite(maps).flatten(1).all(1)
    status = ["ok" if bool(f) else "nonfinite_attribution" for f in finite.tolist()]
    if not bool(finite.all()):
        maps = torch.where(torch.isfinite(maps), maps, torch.zeros_like(maps))
    return maps, status


def _cell_columns(cell: tuple[str, str, str, str], metric: str) -> dict[str, str]:
    suite, ds, model, method = cell
    return {"suite": suite, "dataset": ds, "model": model, "method": method, "metric": metric}


def _rows(cell: tuple[str, str, str, str], metric: str, ids: Sequence[str], out: MetricOutput,
          pre_status: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score and curve rows of one metric output; ``cell`` = (suite, dataset, model, method)."""
    vals = out.values.detach().double().cpu().numpy().reshape(-1)
    status = list(out.status) if out.status is not None else ["ok"] * len(vals)
    status = [p if p != "ok" else s for p, s in zip(pre_status, status)]
    vals = np.where(np.array([s == "ok" for s in status]), vals, np.nan)
    status = ["nan_value" if s == "ok" and not np.isfinite(v) else s for s, v in zip(status, vals)]
    scores = pd.DataFrame({**_cell_columns(cell, metric), "sample_id": list(ids), "value": vals, "status": status})
    if out.curve is None:
        return scores, pd.DataFrame()
    curve = out.curve.detach().double().cpu().numpy()
    n, t = curve.shape
    xs = (out.curve_x.detach().double().cpu().numpy() if out.curve_x is not None
          else np.linspace(0, 1, t))
    curves = pd.DataFrame({
        **_cell_columns(cell, metric),
        "sample_id": np.repeat(np.array(list(ids), dtype=object), t),
        "step": np.tile(np.arange(t), n), "x": np.tile(xs, n), "value": curve.reshape(-1),
    })
    return scores, curves


def _error_rows(cell: tuple[str, str, str, str], metric: str, ids: Sequence[str], reason: str) -> pd.DataFrame:
    return pd.DataFrame({**_cell_columns(cell, metric), "sample_id": list(ids), "value": np.nan, "status": reason})


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:200]


@dataclass(frozen=True)
class RunOptions:
    """How a :class:`Runner` runs (everything but the suite and the results directory).

    ``tf32=False`` runs every float32 convolution and matrix product on CUDA in full float32
    (:func:`exact_fp32`); PyTorch's default lets cuDNN use TF32, which moves some scores at the
    1e-2 level (measured: GridPG localization of smoothed signed maps).

    In-memory runs (the Python API, :func:`saliencybench.evaluate`): ``models`` maps a model
    name of the suite to an ``nn.Module`` already on the device and in eval mode (used as it
    is, never rebuilt or moved), ``samples`` maps a dataset name to a :class:`SampleSet`, and
    ``extra_methods`` adds method entries outside the registry, e.g. precomputed maps handed
    in with :meth:`Runner.provide_attributions`.
    """

    device: str | None = None
    progress: bool = True
    shard: tuple[int, int] | None = None
    cache_dir: Path | None = None
    reuse_from: Sequence[Path] = ()
    figures: bool | None = None
    tf32: bool = True
    models: Mapping[str, nn.Module] | None = None
    samples: Mapping[str, SampleSet] | None = None
    extra_methods: Mapping[str, Entry] | None = None


class Runner:
    """Runs one suite into one results directory. See :func:`run_suite`.

    ``Runner(cfg, out_dir, options)`` or ``Runner(cfg, out_dir, device=..., progress=...)``:
    keywords are the fields of :class:`RunOptions`.
    """

    def __init__(self, cfg: SuiteConfig, out_dir: Path, options: RunOptions | None = None, **kw: Any) -> None:
        from saliencybench.datasets.grid import ScreeningCache

        opts = replace(options or RunOptions(), **kw)
        self.cfg = cfg
        self.tf32 = opts.tf32
        self.models = dict(opts.models or {})
        self.samples = dict(opts.samples or {})
        self.suite = resolve_suite(cfg, models=list(self.models), datasets=list(self.samples),
                                   extra_methods=dict(opts.extra_methods or {}))
        self.out = Path(out_dir)
        self.device = resolve_device(opts.device or cfg.device)
        self.progress = opts.progress
        self.shard = opts.shard
        self.cache = AttributionCache(Path(opts.cache_dir) if opts.cache_dir else self.out / "cache")
        self.store = ResultStore(self.out)
        self.reuse = Reuse(opts.reuse_from)
        self.stats = RunStats()
        self.dataset_info: dict[str, Any] = {}
        self._screen_cache = ScreeningCache(self.out / "grid_screening")
        self.model_info: dict[str, Any] = {}
        self.not_applicable: dict[str, str] = {}
        self.figures = cfg.figures if opts.figures is None else opts.figures
        self._raw: dict[tuple, Tensor] = {}  # raw method outputs of the current (dataset, model)
        sigs = [self.method_job(m).raw_signature() for m in self.suite.methods]
        self._shared_raw = {s for s in sigs if sigs.count(s) > 1}

    def method_job(self, name: str) -> MethodJob:
        """The suite's method ``name`` with its entry and overrides."""
        return MethodJob(name, self.suite.method_entry(name), self.cfg.method_overrides(name))

    # -- metric grouping ----------------------------------------------------------------------
    def _metric_instances(self) -> list[Metric]:
        out = []
        for name in self.suite.metrics:
            entry = self.suite.metric_entry(name)
            params = dict(entry.meta.get("defaults", {}))
            params.update(self.cfg.metric_overrides(name))
            m = entry.obj(name=name, **params)
            if isinstance(m, PerturbationCurve) and "target" not in self.cfg.metric_overrides(name):
                # the suite's scored class (score_target / target) over the preset's
                m.settings = replace(m.settings, target=self.cfg.scored).validate()
            out.append(m)
        return out

    @staticmethod
    def _groups(metrics: list[Metric], method_meta: dict[str, Any]) -> list[list[Metric]]:
        groups: dict[Any, list[Metric]] = {}
        order: list[Any] = []
        for i, m in enumerate(metrics):
            if not m.applies_to(method_meta):
                continue
            if method_meta.get("precomputed") and m.needs_method:
                continue  # the metric re-runs the method, which precomputed maps cannot
            key = m.group_key()
            key = (type(m), key) if key is not None else ("single", i)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(m)
        return [groups[k] for k in order]

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        torch.manual_seed(self.cfg.seed)
        t0 = time.time()
        self.store.clean_temporaries()
        metrics = self._metric_instances()
        with contextlib.nullcontext() if self.tf32 else exact_fp32():
            for ds_name in self.suite.datasets:
                for model_spec in self.suite.models:
                    self._run_pair(ds_name, model_spec, metrics)
        scores, _ = self.store.merge()
        manifest = self._manifest(metrics, time.time() - t0, scores)
        write_json(self.out / "run.json", manifest)
        return manifest

    def provide_attributions(self, ds_name: str, model_spec: str, method: str, maps: Tensor) -> None:
        """Put maps computed elsewhere into the attribution cache as ``method``'s output on the
        in-memory dataset ``ds_name`` (one map per sample, in its order), so the run scores
        them like any computed ones: the method's post-processing (channel reduction,
        upsampling to the input size) is applied here, non-finite values get the
        ``nonfinite_attribution`` status at evaluation, and the method is never called."""
        from saliencybench.attributions.base import postprocess_steps
        from saliencybench.attributions.postprocess import apply_postprocess

        samples = self.samples[ds_name]
        maps = as_map_batch(maps)
        if maps.ndim != 4 or maps.shape[0] != len(samples):
            raise ValueError(f"attributions for '{method}' have shape {tuple(maps.shape)}; expected "
                             f"({len(samples)}, H, W), ({len(samples)}, 1, H, W) or ({len(samples)}, C, H, W)")
        job = self.method_job(method)
        maps = apply_postprocess(maps.detach().cpu(), postprocess_steps(job.entry, dict(job.overrides)),
                                 size=samples.image_size).float()
        key = job.cache_key(self.cfg, ds_name, model_spec)
        size = max(1, self.cfg.chunk_size)
        for c, s0 in enumerate(range(0, len(samples), size)):
            ids = samples.sample_ids[s0:s0 + size]
            self.cache.put(ds_name, model_spec, method, key, c, ids, maps[s0:s0 + size].contiguous())

    def _chunks(self, n: int) -> list[tuple[int, list[int]]]:
        size = max(1, self.cfg.chunk_size)
        chunks = [(c, list(range(s, min(s + size, n)))) for c, s in enumerate(range(0, n, size))]
        if self.shard is not None:
            k, of = self.shard
            chunks = [(c, idx) for c, idx in chunks if c % of == k]
        return chunks

    def _build_pair(self, ds_name: str, model_spec: str) -> PairJob:
        """The model (wrapped for the dataset where it needs it) and samples of a pair; records
        both in the manifest's dataset and model information."""
        if model_spec in self.models:
            model = self.models[model_spec]
            model_meta: dict[str, Any] = {"in_memory": True, "class": type(model).__name__}
        else:
            model, model_entry = build_model(model_spec, self.cfg, self.device)
            model_meta = model_entry.meta
        built = model
        if ds_name in self.samples:
            samples = self.samples[ds_name]
        else:
            samples = build_samples(ds_name, self.cfg, model, model_spec, self.device,
                                    suite_models=list(self.suite.models), screen_cache=self._screen_cache)
        wrap = samples.wrap_model
        if wrap is not None:
            model = wrap(model).to(self.device).eval()
        by_model = dict(self.dataset_info.get(ds_name, {}).get("by_model", {}))
        by_model[model_spec] = {"n": len(samples), **samples.info}
        self.dataset_info[ds_name] = {"n": len(samples), "image_size": list(samples.image_size),
                                      "num_classes": samples.num_classes, **samples.info,
                                      "by_model": by_model}
        self.model_info[model_spec] = {k: v for k, v in model_meta.items()
                                       if isinstance(v, (str, int, float, bool, list, tuple, dict))}
        if model_meta.get("family") == "timm" and isinstance(getattr(built, "sb_info", None), dict):
            self.model_info[model_spec]["build"] = dict(built.sb_info)
        return PairJob(ds_name, model_spec, model, samples)

    def _run_pair(self, ds_name: str, model_spec: str, metrics: list[Metric]) -> None:
        pair = self._build_pair(ds_name, model_spec)
        chunks = self._chunks(len(pair.samples))
        n_batches = sum((len(idx) + self.cfg.batch_size - 1) // self.cfg.batch_size for _, idx in chunks)
        self._raw.clear()
        bar = tqdm(total=len(self.suite.methods) * n_batches, desc=f"{ds_name}/{model_spec}",
                   disable=not self.progress, unit="batch", leave=True, file=sys.stderr)
        try:
            for method in self.suite.methods:
                bar.set_postfix_str(method)
                job = self.method_job(method)
                for chunk, idx in chunks:
                    self._run_chunk(ChunkJob(pair, job, chunk, tuple(idx)), metrics, bar)
        finally:
            bar.close()
        if self.figures and self.shard is None:
            self._qualitative(pair)

    def _qualitative(self, pair: PairJob, n: int = 4) -> None:
        """A few images x methods from the cache (Otsuki et al. 2024 Fig. 5 style)."""
        from saliencybench.benchmark.report.qualitative import qualitative_figure

        chunks = self._chunks(len(pair.samples))
        if not chunks or chunks[0][0] != 0:
            return
        first_ids = [pair.samples.sample_ids[i] for i in chunks[0][1]]
        k = min(n, len(first_ids))
        maps = {}
        for method in self.suite.methods:
            key = self.method_job(method).cache_key(self.cfg, pair.dataset, pair.model_name)
            m = self.cache.get(pair.dataset, pair.model_name, method, key, 0, first_ids)
            if m is not None:
                maps[method] = m[:k]
        qualitative_figure(pair.samples, maps, self.out / "figures", pair.model_name)

    # -- one method on one chunk -------------------------------------------------------------
    def _pending_groups(self, job: ChunkJob, metrics: list[Metric]) -> list[GroupJob]:
        """The chunk's metric groups whose result part is neither stored nor reusable."""
        pair, method = job.pair, job.method
        todo = []
        for g in self._groups(metrics, method.meta):
            group = GroupJob(job, tuple(g), self.store.part_path(pair.dataset, pair.model_name, method.name,
                                                                [m.name for m in g], job.chunk))
            if self.store.has_part(group.path) or self._reuse_part(group):
                self.stats.parts_reused += 1
            else:
                todo.append(group)
        return todo

    def _run_chunk(self, job: ChunkJob, metrics: list[Metric], bar) -> None:
        todo = self._pending_groups(job, metrics)
        n_b = (len(job.idx) + self.cfg.batch_size - 1) // self.cfg.batch_size
        if not todo:
            bar.update(n_b)
            return
        pair, method = job.pair, job.method
        ids = job.ids
        key = method.cache_key(self.cfg, pair.dataset, pair.model_name)
        full = pair.samples.get(list(job.idx)).to(self.device)
        target = _targets(pair.model, full, self.cfg.explained, self.cfg.batch_size)
        maps = self.cache.get(pair.dataset, pair.model_name, method.name, key, job.chunk, ids)
        error: str | None = None
        if maps is None:
            try:
                maps, error = self._attribute(job, ChunkInputs(full, target, None, None), key, bar)
            except NotApplicableError as e:
                self.not_applicable[f"{pair.dataset}/{pair.model_name}/{method.name}"] = str(e)
                for group in todo:  # an empty part: done, and no rows
                    self.store.write_part(group.path, pd.DataFrame(), pd.DataFrame())
                return
        else:
            bar.update(n_b)
        inputs = ChunkInputs(full, target, maps, error)
        for group in todo:
            self._evaluate_group(group, inputs)

    def _attribute(self, job: ChunkJob, inputs: ChunkInputs, key: str, bar) -> tuple[Tensor | None, str | None]:
        """The chunk's maps, computed in batches (aliases that differ only in post-processing
        share the raw output) and cached under ``key``, or the error recorded per sample
        instead of them."""
        method, full, target = job.method, inputs.batch, inputs.target
        pair = job.pair
        n_b = (len(job.idx) + self.cfg.batch_size - 1) // self.cfg.batch_size
        seeds = [stable_seed(self.cfg.seed, method.name, sid) for sid in job.ids]
        overrides = dict(method.overrides)
        out: list[Tensor] = []
        t = time.perf_counter()
        try:
            sig = method.raw_signature()
            for b0 in range(0, len(job.idx), self.cfg.batch_size):
                sl = slice(b0, b0 + self.cfg.batch_size)
                raw = self._raw.get((sig, job.chunk, b0))
                if raw is None:  # aliases differing only in post-processing share this
                    raw = raw_attribution(method.entry, pair.model, full.x[sl], target[sl], params=overrides,
                                          seeds=seeds[sl])
                    if sig in self._shared_raw:
                        self._raw[(sig, job.chunk, b0)] = raw.cpu()
                out.append(finish_attribution(method.entry, raw.to(self.device), full.x[sl], params=overrides).cpu())
                bar.update(1)
            maps = torch.cat(out)
            self.cache.put(pair.dataset, pair.model_name, method.name, key, job.chunk, job.ids, maps)
            self.stats.attribution_calls[method.name] += len(job.idx)
            self.stats.attribution_seconds[method.name] += time.perf_counter() - t
            return maps, None
        except (KeyboardInterrupt, SystemExit):
            raise
        except NotApplicableError:
            bar.update(n_b - len(out))
            raise
        except Exception as e:  # recorded per sample, never a crash of the whole run
            self.stats.failures.append(f"{pair.dataset}/{pair.model_name}/{method.name}: {_short(e)}")
            if self.progress:
                traceback.print_exc(limit=3, file=sys.stderr)
            bar.update(n_b - len(out))
            self.stats.attribution_seconds[method.name] += time.perf_counter() - t
            return None, f"method_error: {_short(e)}"

    def _autocast(self):
        """bf16/fp16 autocast of the metrics' model forwards (CUDA only; off by default)."""
        try:
            return autocast(self.device, self.cfg.autocast)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _reuse_part(self, group: GroupJob) -> bool:
        """Take this part's rows from a baseline results directory when it has all of them,
        computed with the same setup (:mod:`saliencybench.benchmark.reuse`)."""
        pair, method = group.chunk.pair, group.chunk.method
        want = setup_of(self.cfg, method.record, group.metrics, pair.dataset, pair.model_name)
        found = self.reuse.find(want, (pair.dataset, pair.model_name, method.name), group.names, group.chunk.ids)
        if found is None:
            return False
        self.store.write_part(group.path, *found)
        return True

    def _evaluate_group(self, group: GroupJob, inputs: ChunkInputs) -> None:
        pair, method = group.chunk.pair, group.chunk.method
        cell = (self.cfg.name, pair.dataset, pair.model_name, method.name)
        ids = group.chunk.ids
        score_parts, curve_parts = [], []
        if inputs.error is not None or inputs.maps is None:
            for m in group.metrics:
                score_parts.append(_error_rows(cell, m.name, ids, inputs.error or "method_error"))
        else:
            t = time.perf_counter()
            for b0 in range(0, len(ids), self.cfg.batch_size):
                s, c = self._evaluate_batch(group, inputs, slice(b0, b0 + self.cfg.batch_size))
                score_parts += s
                curve_parts += c
            dt = time.perf_counter() - t
            for m in group.metrics:
                self.stats.metric_seconds[m.name] += dt / len(group.metrics)
        scores = pd.concat(score_parts, ignore_index=True)
        curves = pd.concat([c for c in curve_parts if len(c)], ignore_index=True) \
            if any(len(c) for c in curve_parts) else pd.DataFrame()
        self.store.write_part(group.path, scores, curves)
        self.stats.parts_computed += 1

    def _eval_context(self, group: GroupJob, batch: Batch, target: Tensor) -> EvalContext:
        pair, method = group.chunk.pair, group.chunk.method
        seeds = [stable_seed(self.cfg.seed, method.name, sid) for sid in batch.sample_ids]
        entry, overrides = method.entry, dict(method.overrides)

        def attribute(x, tgt, reduce=True, *, model=None, _seeds=seeds, **kw):
            # model=: another network to explain with the same method and parameters (the
            # randomised copies of the model-randomisation metrics, Adebayo et al. 2018, Sec. 3.1)
            params = {**overrides, **kw}
            net = pair.model if model is None else model
            return compute_attribution(entry, net, x, tgt, params=params, seeds=_seeds, reduce=reduce)

        return EvalContext(
            model=pair.model, batch=batch, target=target, normalization=pair.samples.normalization,
            num_classes=pair.samples.num_classes, method=method.name, method_meta=method.meta,
            attribute=attribute, seed=self.cfg.seed, model_name=pair.model_name, dataset_name=pair.dataset,
            forward_counter=self.stats.forwards, max_batch=max(self.cfg.batch_size * 8, 64),
        )

    def _evaluate_batch(self, group: GroupJob, inputs: ChunkInputs,
                        sl: slice) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
        """Score and curve rows of one batch of a group (error rows when the metrics fail)."""
        pair, method = group.chunk.pair, group.chunk.method
        cell = (self.cfg.name, pair.dataset, pair.model_name, method.name)
        full, ids = inputs.batch, group.chunk.ids
        batch = Batch(full.x[sl], full.y[sl], ids[sl], None if full.mask is None else full.mask[sl])
        bmaps, pre = _sanitize(inputs.maps[sl].to(self.device), batch.x)
        ctx = self._eval_context(group, batch, inputs.target[sl])
        names = group.names
        try:
            with model_guard(pair.model, who=f"metrics {names}"), self._autocast():
                outs = type(group.metrics[0]).evaluate_group(list(group.metrics), ctx, bmaps)
            rows = [_rows(cell, m.name, batch.sample_ids, outs[m.name], pre) for m in group.metrics]
            return [s for s, _ in rows], [c for _, c in rows]
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            self.stats.failures.append(f"{pair.dataset}/{pair.model_name}/{method.name}/{names[0]}: {_short(e)}")
            if self.progress:
                traceback.print_exc(limit=3, file=sys.stderr)
            return [_error_rows(cell, n, batch.sample_ids, f"metric_error: {_short(e)}") for n in names], []

    # -- manifest ----------------------------------------------------------------------------
    def _direction(self, metric: Metric) -> bool:
        """The instance's direction where its parameters decide it, else the registry's."""
        own = metric.direction(metric.params)
        return bool(own) if own is not None else bool(self.suite.metric_entry(metric.name).meta["higher_is_better"])

    def _manifest(self, metrics: list[Metric], seconds: float, scores: pd.DataFrame) -> dict[str, Any]:
        status_counts = scores.groupby("status").size().to_dict() if len(scores) else {}
        return {
            "suite": self.cfg.name,
            "config": self.cfg.to_dict(),
            "seed": self.cfg.seed,
            "explain_target": self.cfg.explained,
            "score_target": self.cfg.scored,
            "device": str(self.device),
            "shard": list(self.shard) if self.shard else None,
            "environment": environment_info(self.device, tf32=self.tf32),
            "datasets": self.dataset_info,
            "models": self.model_info,
            "methods": {m: {**self.method_job(m).record, "paper": self.suite.method_entry(m).meta.get("paper", "")}
                        for m in self.suite.methods},
            "metrics": {m.name: {**m.manifest(), "higher_is_better": self._direction(m)} for m in metrics},
            "attribution_calls": {m: self.stats.attribution_calls.get(m, 0) for m in self.suite.methods},
            "timings": {
                "total_seconds": round(seconds, 3),
                "attribution_seconds": {k: round(v, 4) for k, v in self.stats.attribution_seconds.items()},
                "metric_seconds": {k: round(v, 4) for k, v in self.stats.metric_seconds.items()},
            },
            "forward_passes": dict(self.stats.forwards),
            "parts": {"computed": self.stats.parts_computed, "reused": self.stats.parts_reused},
            "status_counts": status_counts,
            "failures": self.stats.failures,
            "not_applicable": self.not_applicable,
            "rows": int(len(scores)),
        }


def run_suite(cfg: SuiteConfig, out_dir: Path | str, **kw: Any) -> dict[str, Any]:
    """Run ``cfg`` into ``out_dir`` (resuming whatever is already there); return the manifest.
    Keywords are the fields of :class:`RunOptions`."""
    return Runner(cfg, Path(out_dir), **kw).run()
