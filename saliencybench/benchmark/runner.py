"""The benchmark runner: datasets x models x methods x metrics -> results directory.

Data flow (DESIGN.md): for each (dataset, model) the samples are loaded once; for each
method the attributions are computed in batches **once** into the attribution cache; for each
group of metrics that can share forward passes the metrics are evaluated from the cached maps;
per-chunk result parts are written atomically, so an interrupted run resumes where it stopped
and `compare` reuses every part it already has. No metric recomputes an attribution.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import platform
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import saliencybench
from saliencybench.attributions.base import (
    compute_attribution,
    finish_attribution,
    method_params,
    raw_attribution,
)
from saliencybench.benchmark.config import SuiteConfig, split_spec
from saliencybench.benchmark.store import AttributionCache, ResultStore
from saliencybench.core.errors import ConfigError, NotApplicableError
from saliencybench.core.guard import model_guard
from saliencybench.core.io import config_key, write_json
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


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment_info(device: torch.device, *, tf32: bool = True) -> dict[str, Any]:
    import torchvision

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "saliencybench": saliencybench.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "device": str(device),
        "git_sha": git_sha(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32"] = bool(tf32 and torch.backends.cudnn.allow_tf32)
    return info


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


def _rows(cfg: SuiteConfig, ds: str, model: str, method: str, metric: str, ids: Sequence[str],
          out: MetricOutput, pre_status: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    vals = out.values.detach().double().cpu().numpy().reshape(-1)
    status = list(out.status) if out.status is not None else ["ok"] * len(vals)
    status = [p if p != "ok" else s for p, s in zip(pre_status, status)]
    vals = np.where(np.array([s == "ok" for s in status]), vals, np.nan)
    status = ["nan_value" if s == "ok" and not np.isfinite(v) else s for s, v in zip(status, vals)]
    scores = pd.DataFrame({
        "suite": cfg.name, "dataset": ds, "model": model, "method": method, "metric": metric,
        "sample_id": list(ids), "value": vals, "status": status,
    })
    if out.curve is None:
        return scores, pd.DataFrame()
    curve = out.curve.detach().double().cpu().numpy()
    n, t = curve.shape
    xs = (out.curve_x.detach().double().cpu().numpy() if out.curve_x is not None
          else np.linspace(0, 1, t))
    curves = pd.DataFrame({
        "suite": cfg.name, "dataset": ds, "model": model, "method": method, "metric": metric,
        "sample_id": np.repeat(np.array(list(ids), dtype=object), t),
        "step": np.tile(np.arange(t), n), "x": np.tile(xs, n), "value": curve.reshape(-1),
    })
    return scores, curves


def _error_rows(cfg, ds, model, method, metric, ids, reason) -> pd.DataFrame:
    return pd.DataFrame({
        "suite": cfg.name, "dataset": ds, "model": model, "method": method, "metric": metric,
        "sample_id": list(ids), "value": np.nan, "status": reason,
    })


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:200]


class Runner:
    """Runs one suite into one results directory. See :func:`run_suite`."""

    def __init__(self, cfg: SuiteConfig, out_dir: Path, *, device: str | None = None,
                 progress: bool = True, shard: tuple[int, int] | None = None,
                 cache_dir: Path | None = None, reuse_from: Sequence[Path] = (),
                 figures: bool | None = None, tf32: bool = True,
                 models: dict[str, nn.Module] | None = None, samples: dict[str, SampleSet] | None = None,
                 extra_methods: dict[str, Entry] | None = None) -> None:
        """``tf32=False`` runs every float32 convolution and matrix product on CUDA in full
        float32 (:func:`exact_fp32`); PyTorch's default lets cuDNN use TF32, which moves some
        scores at the 1e-2 level (measured: GridPG localization of smoothed signed maps).

        In-memory runs (the Python API, :func:`saliencybench.evaluate`): ``models`` maps a
        model name of the suite to an ``nn.Module`` already on the device and in eval mode
        (used as it is, never rebuilt or moved), ``samples`` maps a dataset name to a
        :class:`SampleSet`, and ``extra_methods`` adds method entries outside the registry,
        e.g. precomputed maps handed in with :meth:`provide_attributions`."""
        self.cfg = cfg
        self.tf32 = tf32
        self.models = dict(models or {})
        self.samples = dict(samples or {})
        self.suite = resolve_suite(cfg, models=list(self.models), datasets=list(self.samples),
                                   extra_methods=extra_methods)
        self.out = Path(out_dir)
        self.device = resolve_device(device or cfg.device)
        self.progress = progress
        self.shard = shard
        self.cache = AttributionCache(Path(cache_dir) if cache_dir else self.out / "cache")
        self.store = ResultStore(self.out)
        self.reuse_from = [BaselineResults(Path(p)) for p in reuse_from]
        self.stats = RunStats()
        self.dataset_info: dict[str, Any] = {}
        from saliencybench.datasets.grid import ScreeningCache

        self._screen_cache = ScreeningCache(self.out / "grid_screening")
        self.model_info: dict[str, Any] = {}
        self.not_applicable: dict[str, str] = {}
        self.figures = cfg.figures if figures is None else figures
        self._raw: dict[tuple, Tensor] = {}  # raw method outputs of the current (dataset, model)
        sigs = [self._raw_signature(m) for m in self.suite.methods]
        self._shared_raw = {s for s in sigs if sigs.count(s) > 1}

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
        entry = self.suite.method_entry(method)
        overrides = self.cfg.method_overrides(method)
        maps = apply_postprocess(maps.detach().cpu(), postprocess_steps(entry, overrides),
                                 size=samples.image_size).float()
        key = self._method_key(ds_name, model_spec, method)
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

    def _run_pair(self, ds_name: str, model_spec: str, metrics: list[Metric]) -> None:
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
        wrap = getattr(samples, "wrap_model", None)
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
        chunks = self._chunks(len(samples))
        n_batches = sum((len(idx) + self.cfg.batch_size - 1) // self.cfg.batch_size for _, idx in chunks)
        self._raw.clear()
        bar = tqdm(total=len(self.suite.methods) * n_batches, desc=f"{ds_name}/{model_spec}",
                   disable=not self.progress, unit="batch", leave=True, file=sys.stderr)
        try:
            for method in self.suite.methods:
                bar.set_postfix_str(method)
                for chunk, idx in chunks:
                    self._run_chunk(ds_name, model_spec, model, samples, method, chunk, idx, metrics, bar)
        finally:
            bar.close()
        if self.figures and self.shard is None:
            self._qualitative(ds_name, model_spec, samples)

    def _qualitative(self, ds_name: str, model_spec: str, samples: SampleSet, n: int = 4) -> None:
        """A few images x methods from the cache (Otsuki et al. 2024 Fig. 5 style)."""
        from saliencybench.benchmark.report.plots import qualitative_grid
        from saliencybench.core.io import safe_filename as _safe

        chunks = self._chunks(len(samples))
        if not chunks or chunks[0][0] != 0:
            return
        first_ids = [samples.sample_ids[i] for i in chunks[0][1]]
        idx = list(range(min(n, len(first_ids))))
        ids = first_ids[: len(idx)]
        maps = {}
        for method in self.suite.methods:
            key = self._method_key(ds_name, model_spec, method)
            m = self.cache.get(ds_name, model_spec, method, key, 0, first_ids)
            if m is not None:
                maps[method] = m[: len(idx)]
        if not maps:
            return
        batch = samples.get(idx)
        images = samples.normalization.to_pixel(batch.x)
        if images.shape[1] != 3:
            images = images[:, :1].expand(-1, 3, -1, -1)
        labels = [samples.class_names[int(y)] if samples.class_names and int(y) < len(samples.class_names) else str(int(y))
                  for y in batch.y]
        qualitative_grid(images, maps, self.out / "figures" / f"qualitative_{_safe(ds_name)}_{_safe(model_spec)}.png",
                         title=f"{ds_name} / {model_spec}: {', '.join(ids)}", labels=labels)

    def _raw_signature(self, method: str) -> str:
        """Methods with equal signatures produce the same raw output (they differ only in
        post-processing); stochastic methods draw per-method seeds, so they never share."""
        entry = self.suite.method_entry(method)
        return config_key({"method": entry.name, "params": method_params(entry, self.cfg.method_overrides(method)),
                           "seed_of": method if entry.meta.get("stochastic") else ""})

    def _method_key(self, ds_name: str, model_spec: str, method: str) -> str:
        entry = self.suite.method_entry(method)
        overrides = self.cfg.method_overrides(method)
        return config_key({
            "method": entry.name, "params": method_params(entry, overrides),
            "postprocess": overrides.get("postprocess", entry.meta.get("postprocess")),
            "dataset": ds_name, "dataset_params": self.cfg.dataset_params.get(ds_name, {}),
            "model": model_spec, "model_params": self.cfg.model_params.get(model_spec, {}),
            "seed": self.cfg.seed, "target": self.cfg.explained,
        })

    def _run_chunk(self, ds_name: str, model_spec: str, model: nn.Module, samples: SampleSet,
                   method: str, chunk: int, idx: list[int], metrics: list[Metric], bar) -> None:
        entry = self.suite.method_entry(method)
        overrides = self.cfg.method_overrides(method)
        meta = {**entry.meta, "params": method_params(entry, overrides), "name": method, "base": entry.name}
        groups = self._groups(metrics, meta)
        parts = [(g, self.store.part_path(ds_name, model_spec, method, [m.name for m in g], chunk)) for g in groups]
        ids = [samples.sample_ids[i] for i in idx]
        todo = []
        for g, path in parts:
            if self.store.has_part(path):
                self.stats.parts_reused += 1
            elif self._reuse_part(path, ds_name, model_spec, method, g, ids):
                self.stats.parts_reused += 1
            else:
                todo.append((g, path))
        n_b = (len(idx) + self.cfg.batch_size - 1) // self.cfg.batch_size
        if not todo:
            bar.update(n_b)
            return
        key = self._method_key(ds_name, model_spec, method)
        full = samples.get(idx).to(self.device)
        target = _targets(model, full, self.cfg.explained, self.cfg.batch_size)
        maps = self.cache.get(ds_name, model_spec, method, key, chunk, ids)
        method_error: str | None = None
        if maps is None:
            seeds = [stable_seed(self.cfg.seed, method, sid) for sid in ids]
            out = []
            t = time.perf_counter()
            try:
                sig = self._raw_signature(method)
                for b0 in range(0, len(idx), self.cfg.batch_size):
                    sl = slice(b0, b0 + self.cfg.batch_size)
                    raw = self._raw.get((sig, chunk, b0))
                    if raw is None:  # aliases differing only in post-processing share this
                        raw = raw_attribution(entry, model, full.x[sl], target[sl], params=overrides,
                                              seeds=seeds[sl])
                        if sig in self._shared_raw:
                            self._raw[(sig, chunk, b0)] = raw.cpu()
                    out.append(finish_attribution(entry, raw.to(self.device), full.x[sl], params=overrides).cpu())
                    bar.update(1)
                maps = torch.cat(out)
                self.cache.put(ds_name, model_spec, method, key, chunk, ids, maps)
                self.stats.attribution_calls[method] += len(idx)
            except (KeyboardInterrupt, SystemExit):
                raise
            except NotApplicableError as e:
                self.not_applicable[f"{ds_name}/{model_spec}/{method}"] = str(e)
                bar.update(n_b - len(out))
                for _, path in todo:  # an empty part: done, and no rows
                    self.store.write_part(path, pd.DataFrame(), pd.DataFrame())
                return
            except Exception as e:  # recorded per sample, never a crash of the whole run
                method_error = f"method_error: {_short(e)}"
                self.stats.failures.append(f"{ds_name}/{model_spec}/{method}: {_short(e)}")
                if self.progress:
                    traceback.print_exc(limit=3, file=sys.stderr)
                bar.update(n_b - len(out))
            self.stats.attribution_seconds[method] += time.perf_counter() - t
        else:
            bar.update(n_b)
        for g, path in todo:
            self._evaluate_group(ds_name, model_spec, model, samples, method, meta, entry, overrides,
                                 g, path, full, target, ids, maps, method_error)

    def _autocast(self):
        """bf16/fp16 autocast of the metrics' model forwards (CUDA only; off by default)."""
        try:
            return autocast(self.device, self.cfg.autocast)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _method_record(self, method: str) -> dict[str, Any]:
        """What run.json records of a method: the inputs that decide its attributions."""
        entry = self.suite.method_entry(method)
        overrides = self.cfg.method_overrides(method)
        return {"base": entry.name, "params": method_params(entry, overrides),
                "postprocess": list(overrides.get("postprocess", entry.meta.get("postprocess", ())))}

    def _reuse_part(self, path: Path, ds: str, model: str, method: str, group: list[Metric],
                    ids: list[str]) -> bool:
        """Take this part's rows from a baseline results directory when it has all of them,
        computed with the same method, metric, dataset and model parameters, seed and target
        (as its run.json records them); anything else is recomputed."""
        want = {
            "method": self._method_record(method),
            "metrics": {m.name: m.manifest() for m in group},
            "context": {"seed": self.cfg.seed, "target": self.cfg.explained,
                        "dataset": self.cfg.dataset_params.get(ds, {}),
                        "model": self.cfg.model_params.get(model, {})},
        }
        for base in self.reuse_from:
            if not base.same_setup(ds, model, method, want):
                continue
            found = base.rows(ds, model, method, [m.name for m in group], ids)
            if found is not None:
                self.store.write_part(path, *found)
                return True
        return False

    def _evaluate_group(self, ds_name, model_spec, model, samples, method, meta, entry, overrides,
                        group: list[Metric], path: Path, full: Batch, target: Tensor, ids: list[str],
                        maps: Tensor | None, method_error: str | None) -> None:
        score_parts, curve_parts = [], []
        if method_error is not None or maps is None:
            for m in group:
                score_parts.append(_error_rows(self.cfg, ds_name, model_spec, method, m.name, ids,
                                               method_error or "method_error"))
        else:
            t = time.perf_counter()
            for b0 in range(0, len(ids), self.cfg.batch_size):
                sl = slice(b0, b0 + self.cfg.batch_size)
                batch = Batch(full.x[sl], full.y[sl], ids[sl], None if full.mask is None else full.mask[sl])
                bmaps, pre = _sanitize(maps[sl].to(self.device), batch.x)
                seeds = [stable_seed(self.cfg.seed, method, sid) for sid in batch.sample_ids]

                def attribute(x, tgt, reduce=True, _seeds=seeds, **kw):
                    params = {**overrides, **kw}
                    return compute_attribution(entry, model, x, tgt, params=params, seeds=_seeds, reduce=reduce)

                ctx = EvalContext(
                    model=model, batch=batch, target=target[sl], normalization=samples.normalization,
                    num_classes=samples.num_classes, method=method, method_meta=meta,
                    attribute=attribute, seed=self.cfg.seed, model_name=model_spec, dataset_name=ds_name,
                    forward_counter=self.stats.forwards, max_batch=max(self.cfg.batch_size * 8, 64),
                )
                try:
                    with model_guard(model, who=f"metrics {[m.name for m in group]}"), self._autocast():
                        outs = type(group[0]).evaluate_group(group, ctx, bmaps)
                    for m in group:
                        s, c = _rows(self.cfg, ds_name, model_spec, method, m.name, batch.sample_ids, outs[m.name], pre)
                        score_parts.append(s)
                        curve_parts.append(c)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:
                    self.stats.failures.append(f"{ds_name}/{model_spec}/{method}/{group[0].name}: {_short(e)}")
                    if self.progress:
                        traceback.print_exc(limit=3, file=sys.stderr)
                    for m in group:
                        score_parts.append(_error_rows(self.cfg, ds_name, model_spec, method, m.name,
                                                       batch.sample_ids, f"metric_error: {_short(e)}"))
            dt = time.perf_counter() - t
            for m in group:
                self.stats.metric_seconds[m.name] += dt / len(group)
        scores = pd.concat(score_parts, ignore_index=True)
        curves = pd.concat([c for c in curve_parts if len(c)], ignore_index=True) if any(len(c) for c in curve_parts) else pd.DataFrame()
        self.store.write_part(path, scores, curves)
        self.stats.parts_computed += 1

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
            "methods": {m: {**self._method_record(m), "paper": self.suite.method_entry(m).meta.get("paper", "")}
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


class BaselineResults:
    """Stored ``scores.csv`` / ``curves.csv`` of an earlier run, served as result parts.

    ``compare`` and reruns against a committed baseline reuse rows from here: a part is
    reused only when the baseline's run.json shows the same setup (:meth:`same_setup`) and
    every (metric, sample) row it needs is present.
    """

    def __init__(self, root: Path) -> None:
        from saliencybench.benchmark.store import read_curves, read_manifest, read_scores

        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        scores = read_scores(self.root)
        curves = read_curves(self.root)
        self._scores = {k: g for k, g in scores.groupby(["dataset", "model", "method"], sort=False)}
        self._curves = {k: g for k, g in curves.groupby(["dataset", "model", "method"], sort=False)} if len(curves) else {}

    def same_setup(self, ds: str, model: str, method: str, want: dict[str, Any]) -> bool:
        """True when the baseline computed ``method`` with the parameters in ``want`` (method
        record, metric manifests, seed / target / dataset / model parameters)."""
        m = self.manifest
        if not m:
            return False
        cfg = m.get("config", {})
        have = {
            "method": {k: m.get("methods", {}).get(method, {}).get(k) for k in want["method"]},
            "metrics": {name: {k: v for k, v in m.get("metrics", {}).get(name, {}).items() if k != "higher_is_better"}
                        for name in want["metrics"]},
            "context": {"seed": m.get("seed"),
                        "target": (cfg.get("suite", {}).get("explain_target")
                                   or cfg.get("suite", {}).get("target")),
                        "dataset": cfg.get("datasets", {}).get(ds, {}), "model": cfg.get("models", {}).get(model, {})},
        }
        return _canonical(have) == _canonical(want)

    def rows(self, ds: str, model: str, method: str, metrics: list[str],
             ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        g = self._scores.get((ds, model, method))
        if g is None:
            return None
        s = g[g["metric"].isin(metrics) & g["sample_id"].isin(ids)]
        if len(s) != len(metrics) * len(ids):
            return None
        c = self._curves.get((ds, model, method))
        c = c[c["metric"].isin(metrics) & c["sample_id"].isin(ids)] if c is not None else pd.DataFrame()
        return s, c


def _canonical(obj: Any) -> Any:
    """JSON round trip (tuples become lists, keys sorted) so records compare as run.json stores them."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def run_suite(cfg: SuiteConfig, out_dir: Path | str, **kw: Any) -> dict[str, Any]:
    """Run ``cfg`` into ``out_dir`` (resuming whatever is already there); return the manifest."""
    return Runner(cfg, Path(out_dir), **kw).run()
