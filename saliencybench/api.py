"""The Python API for notebooks: :func:`evaluate` and :func:`leaderboard`.

``evaluate`` scores an in-memory model on in-memory samples, the way Quantus users call
``quantus.evaluate``, through the same :class:`~saliencybench.benchmark.runner.Runner` as
``saliencybench run``: one in-memory :class:`SampleSet` and one :class:`SuiteConfig` are built
and run into a results directory (a temporary one unless ``out=`` is given), so the
attribution cache, batching, shared forwards of the perturbation metrics and the per-sample
statuses (``nonfinite_attribution``, ``method_error: ...``) are those of a suite run, and the
returned table is that run's ``scores.csv``.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from saliencybench.core.errors import PrecomputedAttributionError
from saliencybench.core.registry import METHODS, METRICS, Entry, RegistryError, populate
from saliencybench.core.tensors import as_map_batch
from saliencybench.core.types import IDENTITY_NORMALIZATION, Normalization, SampleSet

__all__ = ["evaluate", "leaderboard", "EvaluateOptions"]

def _precomputed_fn(model, x, target, **kw):  # pragma: no cover - never reached by the runner
    raise PrecomputedAttributionError(
        "this method was given as precomputed maps (attributions=...); it cannot be run again")


def precomputed_entry(name: str) -> Entry:
    """A method entry, outside the registry, for maps handed to the runner with
    :meth:`~saliencybench.benchmark.runner.Runner.provide_attributions` (channel-summed like a
    registered method's output; metrics that re-run the method skip it)."""
    return Entry(name=name, obj=_precomputed_fn, kind="method", meta={
        "family": "precomputed", "paper": "", "defaults": {}, "postprocess": ("sum",),
        "stochastic": False, "conservation": None, "layer_capable": False, "precomputed": True,
        "description": "maps passed to saliencybench.evaluate(attributions=...)"})


def _parse_specs(spec: Any, what: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Names and per-name parameters from ``"a,b"``, ``["a", {"b": {...}}]`` or ``{"a": {}, ...}``.

    A parameter table may carry ``base`` to alias an implementation under a new name, exactly
    as ``[methods.X] base = ...`` in a suite TOML.
    """
    if spec is None:
        return [], {}
    if isinstance(spec, str):
        items: list[Any] = [s.strip() for s in spec.split(",") if s.strip()]
    elif isinstance(spec, Mapping):
        items = [{k: v} for k, v in spec.items()]
    else:
        items = list(spec)
    names: list[str] = []
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, str):
            pairs = [(item, None)]
        elif isinstance(item, Mapping):
            pairs = list(item.items())
        else:
            raise TypeError(f"{what} entries must be names or {{name: params}} dicts, got {item!r}")
        for name, p in pairs:
            if not isinstance(name, str) or not name:
                raise TypeError(f"{what} names must be non-empty strings, got {name!r}")
            if p is not None and not isinstance(p, Mapping):
                raise TypeError(f"{what} '{name}': parameters must be a dict, got {type(p).__name__}")
            if name in names:
                raise ValueError(f"{what} '{name}' is listed twice")
            names.append(name)
            if p:
                params[name] = dict(p)
    return names, params


def _as_normalization(norm: Any) -> Normalization | None:
    if norm is None or isinstance(norm, Normalization):
        return norm
    if isinstance(norm, str):
        from saliencybench.core.types import IMAGENET_NORMALIZATION

        table = {"imagenet": IMAGENET_NORMALIZATION, "identity": IDENTITY_NORMALIZATION}
        if norm not in table:
            raise ValueError(f"normalization must be a Normalization, (mean, std) or one of {sorted(table)}, "
                             f"got {norm!r}")
        return table[norm]
    mean, std = norm
    return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def _from_loader(loader: Iterable) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Concatenate a DataLoader's batches: tensors, (x, y), (x, y, mask) or dicts with x / y / mask."""
    xs, ys, ms = [], [], []
    for i, batch in enumerate(loader):
        if isinstance(batch, Tensor):
            x, y, m = batch, None, None
        elif isinstance(batch, Mapping):
            x, y, m = batch.get("x"), batch.get("y"), batch.get("mask")
            if x is None:
                raise ValueError(f"DataLoader batch {i} is a dict without key 'x' (keys: {sorted(batch)})")
        elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
            x, y, m = (list(batch) + [None])[:3]
        else:
            raise ValueError(f"DataLoader batch {i} must be a tensor, (x, y), (x, y, mask) or a dict "
                             f"with 'x', 'y', 'mask'; got {type(batch).__name__}"
                             + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
        if i and ((y is None) != (ys[0] is None) or (m is None) != (ms[0] is None)):
            raise ValueError(f"DataLoader batch {i} does not have the same fields as batch 0")
        xs.append(torch.as_tensor(x))
        ys.append(None if y is None else torch.as_tensor(y))
        ms.append(None if m is None else torch.as_tensor(m))
    if not xs:
        raise ValueError("the DataLoader yielded no batches")
    return torch.cat(xs), None if ys[0] is None else torch.cat(ys), None if ms[0] is None else torch.cat(ms)


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _check_inputs(x: Tensor, targets: Any, masks: Tensor | None, sample_ids: Sequence[str] | None,
                  *, predicted: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    if not isinstance(x, Tensor):
        raise TypeError(f"inputs must be a tensor (N,C,H,W), a SampleSet or a DataLoader; got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"inputs must be (N,C,H,W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"inputs must be a floating-point tensor, got {x.dtype}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("inputs hold no samples")
    y = None
    if targets is None and not predicted:
        raise ValueError("targets are required: one class index per input (or target='predicted')")
    if targets is not None:
        y = torch.as_tensor(targets)
        if y.ndim != 1:
            raise ValueError(f"targets must be (N,) class indices, got shape {tuple(y.shape)}")
        if y.shape[0] != n:
            raise ValueError(f"targets has {y.shape[0]} entries for {n} inputs")
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ValueError("targets must be integer class indices")
        y = y.long().cpu()
    if masks is not None:
        masks = as_map_batch(torch.as_tensor(masks))
        if masks.ndim != 4 or masks.shape[0] != n or masks.shape[1] != 1 or masks.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"masks must be (N,H,W) or (N,1,H,W) = ({n}, 1, {x.shape[-2]}, {x.shape[-1]}) "
                             f"for inputs of shape {tuple(x.shape)}, got {tuple(masks.shape)}")
        masks = masks.float().cpu()
    if sample_ids is not None and (len(sample_ids) != n or len(set(map(str, sample_ids))) != n):
        raise ValueError(f"sample_ids must be {n} distinct names, one per input")
    return x.detach().cpu(), y, masks


@dataclass(frozen=True)
class EvaluateOptions:
    """The keyword options of :func:`evaluate` besides ``methods``, ``metrics`` and ``attributions``.

    - ``masks``: (N,H,W) or (N,1,H,W) object masks for the localization metrics.
    - ``normalization``: how ``inputs`` were normalised, a :class:`Normalization`, ``(mean, std)``
      or ``"imagenet"``; the perturbation substrates (black pixels, ...) are built in pixel space
      through it. Default: the SampleSet's own, else identity (inputs are pixels).
    - ``sample_ids``: one name per input (default ``000000``, ``000001``, ...).
    - ``device``: where to run (default: the model's device); ``"auto"`` picks CUDA when present.
    - ``batch_size``: images per attribution batch (metric forwards use up to 8x as many).
    - ``target``: ``"label"`` explains ``targets``; ``"predicted"`` explains the model's
      prediction, as the suite option of the same name.
    - ``seed``: seed of the stochastic methods (per-sample seeds, independent of batching).
    - ``return_curves``: also return the long-format curves (one row per (..., sample_id, step)
      with abscissa ``x`` and ``value``) as ``(scores, curves)``.
    - ``out``: keep the results directory (``scores.csv``, ``curves.csv.gz``, ``run.json``,
      attribution ``cache/``) there; it must be new or empty. Default: a temporary directory,
      removed before returning.
    - ``progress``: show a progress bar (and tracebacks of method errors) on stderr.
    - ``model_name``, ``dataset_name``, ``suite_name``: the ``model`` / ``dataset`` / ``suite`` columns.
    """

    masks: Tensor | None = None
    normalization: Normalization | tuple | str | None = None
    sample_ids: Sequence[str] | None = None
    device: str | torch.device | None = None
    batch_size: int = 32
    target: str = "label"
    seed: int = 0
    return_curves: bool = False
    out: str | Path | None = None
    progress: bool = False
    model_name: str = "model"
    dataset_name: str | None = None
    suite_name: str = "evaluate"

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> EvaluateOptions:
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"evaluate() got unexpected keyword argument(s) {unknown}")
        return cls(**options)

    def validate(self) -> EvaluateOptions:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.target not in ("label", "predicted"):
            raise ValueError(f"target must be 'label' or 'predicted', got {self.target!r}")
        return self


@dataclass
class _Inputs:
    """The samples of one :func:`evaluate` call: a SampleSet, or tensors until the number of
    classes is known (:func:`_sample_set`)."""

    samples: SampleSet | None
    x: Tensor | None
    y: Tensor | None
    masks: Tensor | None
    name: str
    normalization: Normalization | None


def evaluate(
    model: nn.Module,
    inputs: Tensor | SampleSet | Iterable,
    targets: Tensor | Sequence[int] | None = None,
    *,
    methods: Any = (),
    metrics: Any = ("insertion", "deletion", "id_score"),
    attributions: Mapping[str, Tensor] | None = None,
    **options: Any,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Score attribution methods on an in-memory model and samples; return ``scores.csv``.

    Runs one suite (this dataset x this model x ``methods`` x ``metrics``) through the benchmark
    runner, exactly as ``saliencybench run`` would, and returns its long-format scores: one row per
    (suite, dataset, model, method, metric, sample_id) with ``value`` and ``status`` (``ok``, or why
    the sample was rejected). ``saliencybench.leaderboard(scores)`` renders the markdown table.

    Args:
        model: a classifier returning (N, classes) logits, left as it was (eval mode during the
            run, train/eval flags restored; on another ``device`` a copy moves there). Layer
            methods (CAMs) use ``model.sb_layers["cam"]``, else a ``layer4`` / ``features``
            module, else the ``layer`` parameter, e.g. ``{"gradcam": {"layer": "features.3"}}``.
        inputs: (N,C,H,W) tensor or numpy array as the model sees them, a :class:`SampleSet`
            (targets, masks, normalization and ids come with it), or an iterable such as a
            ``DataLoader`` yielding ``x``, ``(x, y)``, ``(x, y, mask)`` or dicts with those keys.
        targets: (N,) class indices, scored and explained; optional with ``target="predicted"``.
        methods: method names or wildcards (``"lrp*"``) as a list, comma string or dict; an entry
            may carry parameters, ``{"name": {params}}``, and ``{"alias": {"base": "gradcam", ...}}``
            runs ``gradcam`` under the name ``alias``, as ``[methods.alias]`` in a suite TOML.
        metrics: metric names, with parameters and aliases as for ``methods``.
        attributions: maps computed elsewhere, ``{"name": (N,H,W) | (N,1,H,W) | (N,C,H,W)}``
            (Quantus' ``a_batch``), ranked alongside ``methods``: channels summed, upsampled
            bilinearly, non-finite maps get ``nonfinite_attribution``; metrics that re-run the
            method (``mia``, ``conservation_error``) give no rows for them.
        **options: the fields of :class:`EvaluateOptions` (``masks``, ``normalization``,
            ``sample_ids``, ``device``, ``batch_size``, ``target``, ``seed``, ``return_curves``,
            ``out``, ``progress``, ``model_name``, ``dataset_name``, ``suite_name``).

    Returns the scores DataFrame, or ``(scores, curves)`` with ``return_curves=True``; the run
    manifest (``run.json``) is in ``scores.attrs["manifest"]``. Raises ``UnknownNameError`` for an
    unknown method or metric (with a suggestion), ValueError / TypeError for arguments of the
    wrong shape or type.
    """
    populate()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    opts = EvaluateOptions.of(options).validate()
    got = _inputs(inputs, targets, opts)
    dev = _run_device(model, opts.device)
    run_model = model if _model_device(model) == dev else copy.deepcopy(model).to(dev)
    training = {name: m.training for name, m in run_model.named_modules()}
    run_model.eval()
    try:
        samples = _sample_set(run_model, got, opts, dev)
        scores, curves = _run(run_model, samples, (methods, metrics, attributions), opts, dev)
    finally:
        for name, m in run_model.named_modules():
            if name in training:
                m.training = training[name]
    return (scores, curves) if opts.return_curves else scores


def _inputs(inputs: Any, targets: Any, opts: EvaluateOptions) -> _Inputs:
    """``inputs`` (SampleSet, tensor, numpy array or DataLoader) with targets and masks, checked."""
    norm = _as_normalization(opts.normalization)
    if isinstance(inputs, SampleSet):
        if targets is not None or opts.masks is not None or opts.sample_ids is not None:
            raise ValueError("a SampleSet carries its own targets, masks and sample ids; "
                             "pass inputs=samples.x, targets=samples.y, ... to change them")
        samples = inputs.subset(range(len(inputs)))
        samples.normalization = norm or inputs.normalization
        return _Inputs(samples, None, None, None, opts.dataset_name or inputs.name or "data", norm)
    masks = opts.masks
    if isinstance(inputs, np.ndarray):  # Quantus users' x_batch
        inputs = torch.from_numpy(inputs)
    if not isinstance(inputs, Tensor):
        if not hasattr(inputs, "__iter__"):
            raise TypeError(f"inputs must be a tensor (N,C,H,W), a SampleSet or a DataLoader; "
                            f"got {type(inputs).__name__}")
        inputs, y_loader, m_loader = _from_loader(inputs)
        if y_loader is not None and targets is not None:
            raise ValueError("the DataLoader yields targets; do not pass targets= as well")
        if m_loader is not None and masks is not None:
            raise ValueError("the DataLoader yields masks; do not pass masks= as well")
        targets = y_loader if y_loader is not None else targets
        masks = m_loader if m_loader is not None else masks
    x, y, masks = _check_inputs(inputs, targets, masks, opts.sample_ids, predicted=opts.target == "predicted")
    return _Inputs(None, x, y, masks, opts.dataset_name or "data", norm)


def _run_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where :func:`evaluate` runs: ``device``, else the model's (CUDA with an explicit index)."""
    dev = torch.device(device) if isinstance(device, torch.device) else None
    if dev is None:
        if device is None:
            dev = _model_device(model)
        else:
            from saliencybench.benchmark.runner import resolve_device

            dev = resolve_device(str(device))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _num_classes(run_model: nn.Module, probe: Tensor, dev: torch.device) -> int:
    """The number of classes of the model's (N, classes) logits on one sample."""
    with torch.no_grad():
        try:
            logits = run_model(probe.to(dev))
        except Exception as e:
            raise ValueError(f"the model cannot run on inputs of shape {tuple(probe.shape[1:])} "
                             f"per sample: {type(e).__name__}: {e}") from e
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ValueError("the model must return (N, classes) logits, got "
                         + (f"shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__))
    return int(logits.shape[1])


def _sample_set(run_model: nn.Module, got: _Inputs, opts: EvaluateOptions, dev: torch.device) -> SampleSet:
    """The :class:`SampleSet` the runner scores (built from tensors once the classes are known)."""
    from saliencybench.benchmark.runner import predicted_classes

    samples, x, y = got.samples, got.x, got.y
    dtype = next((p.dtype for p in run_model.parameters() if p.is_floating_point()), None)
    if dtype is not None and samples is None and x.dtype != dtype:
        x = x.to(dtype)  # e.g. float64 numpy arrays for a float32 model
    num_classes = _num_classes(run_model, samples.get([0]).x if samples is not None else x[:1], dev)
    if samples is None:
        if y is None:  # target="predicted" without labels
            y = predicted_classes(run_model, x, opts.batch_size, dev).cpu()
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"targets must lie in [0, {num_classes}) for a model with {num_classes} "
                             f"outputs; got {int(y.min())}..{int(y.max())}")
        ids = None if opts.sample_ids is None else [str(s) for s in opts.sample_ids]
        samples = SampleSet(x, y, normalization=got.normalization or IDENTITY_NORMALIZATION,
                            num_classes=num_classes, sample_ids=ids, mask=got.masks, name=got.name,
                            info={"source": "saliencybench.evaluate"})
    if len(samples.normalization.mean) != samples.x.shape[1]:
        if samples.normalization is IDENTITY_NORMALIZATION:
            c = int(samples.x.shape[1])
            samples.normalization = Normalization((0.0,) * c, (1.0,) * c)
        else:
            raise ValueError(f"normalization has {len(samples.normalization.mean)} channels, "
                             f"the inputs {samples.x.shape[1]}")
    samples.name = got.name
    return samples


def _precomputed(attributions: Mapping[str, Any] | None, method_names: list[str],
                 n: int) -> tuple[dict[str, Tensor], dict[str, Entry]]:
    """The checked precomputed maps (as tensors) and their method entries."""
    extra: dict[str, Entry] = {}
    pre = dict(attributions or {})
    for name, maps in pre.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"attributions keys must be method names, got {name!r}")
        if name in METHODS or name in method_names:
            raise ValueError(f"attributions name '{name}' is also a method name; pick another name")
        if isinstance(maps, np.ndarray):  # Quantus users' a_batch
            maps = pre[name] = torch.from_numpy(maps)
        if not isinstance(maps, Tensor):
            raise TypeError(f"attributions['{name}'] must be a tensor, got {type(maps).__name__}")
        if maps.ndim not in (3, 4) or maps.shape[0] != n:
            raise ValueError(f"attributions['{name}'] has shape {tuple(maps.shape)}; expected "
                             f"({n}, H, W), ({n}, 1, H, W) or ({n}, C, H, W)")
        extra[name] = precomputed_entry(name)
    return pre, extra


def _run(run_model: nn.Module, samples: SampleSet, what: tuple[Any, Any, Any], opts: EvaluateOptions,
         dev: torch.device) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Run the suite of ``what`` = (methods, metrics, attributions); its scores and curves."""
    from saliencybench.benchmark.config import SuiteConfig
    from saliencybench.benchmark.results import read_curves, read_scores
    from saliencybench.benchmark.runner import Runner

    methods, metrics, attributions = what
    method_names, method_params = _parse_specs(methods, "method")
    metric_names, metric_params = _parse_specs(metrics, "metric")
    pre, extra = _precomputed(attributions, method_names, len(samples))
    if not method_names and not extra:
        raise ValueError("nothing to score: give methods=[...] and/or attributions={name: maps}")
    if not metric_names:
        raise ValueError("no metrics given")
    cfg = SuiteConfig(
        name=opts.suite_name, datasets=[samples.name], models=[opts.model_name],
        methods=method_names + list(extra), metrics=metric_names, n_samples=None,
        batch_size=opts.batch_size, seed=opts.seed, device=str(dev), target=opts.target, figures=False,
        method_params=method_params, metric_params=metric_params, source="saliencybench.evaluate",
    )
    with _results_dir(opts.out) as out_dir:
        runner = Runner(cfg, out_dir, device=str(dev), progress=opts.progress, figures=False,
                        models={opts.model_name: run_model}, samples={samples.name: samples}, extra_methods=extra)
        for name, maps in pre.items():
            runner.provide_attributions(samples.name, opts.model_name, name, maps)
        manifest = runner.run()
        scores = read_scores(out_dir)
        curves = read_curves(out_dir) if opts.return_curves else None
    scores.attrs["manifest"] = manifest
    return scores, curves


class _results_dir:
    """``out`` (created; must be new or empty) or a temporary directory removed on exit."""

    def __init__(self, out: str | Path | None) -> None:
        self.out = None if out is None else Path(out)
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Path:
        if self.out is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="saliencybench-evaluate-")
            return Path(self._tmp.name)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ValueError(f"out={str(self.out)!r} must be a new or empty directory (in-memory models "
                             "and samples cannot be checked against earlier results in it)")
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def leaderboard(scores: pd.DataFrame, *, higher_is_better: Mapping[str, bool] | None = None) -> str:
    """The markdown leaderboard of a scores DataFrame (from :func:`evaluate` or a ``scores.csv``).

    The same tables as ``saliencybench leaderboard`` (one per dataset / model: mean ± 95%
    bootstrap CI, best in bold, per-metric and overall rank), rendered by the same code.
    Metric directions come from the registry, or from the run manifest that ``evaluate``
    attaches (``scores.attrs["manifest"]``, which also knows aliased metrics);
    ``higher_is_better={"my_alias": False}`` overrides them.
    """
    from saliencybench.benchmark.report.leaderboard import (
        LEGEND,
        markdown_tables,
        plan_note,
        tables_from_scores,
    )
    from saliencybench.benchmark.results import SCORE_COLUMNS

    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"leaderboard() takes a scores DataFrame, got {type(scores).__name__}")
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns and c != "suite"]
    if missing:
        raise ValueError(f"scores lacks columns {missing} (expected those of scores.csv: {SCORE_COLUMNS})")
    if scores.empty:
        raise ValueError("scores is empty: nothing to rank")
    manifest = copy.deepcopy(dict(scores.attrs.get("manifest", {}) or {}))
    if higher_is_better:
        info = manifest.setdefault("metrics", {})
        for name, hib in higher_is_better.items():
            info.setdefault(name, {})["higher_is_better"] = bool(hib)
    unknown = [m for m in scores["metric"].unique()
               if "higher_is_better" not in manifest.get("metrics", {}).get(m, {}) and m not in METRICS
               and manifest.get("config", {}).get("metrics", {}).get(m, {}).get("base") not in METRICS]
    if unknown:
        raise RegistryError(f"direction of metric(s) {sorted(unknown)} unknown: pass "
                            "higher_is_better={name: True/False}")
    agg, ranks = tables_from_scores(scores, manifest)
    notes = plan_note(manifest, sorted(agg["metric"].unique()))
    return "\n".join([LEGEND, ""] + notes + markdown_tables(agg, ranks, manifest, scores)).rstrip() + "\n"
