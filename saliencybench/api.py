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

__all__ = ["evaluate", "leaderboard"]

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


def evaluate(
    model: nn.Module,
    inputs: Tensor | SampleSet | Iterable,
    targets: Tensor | Sequence[int] | None = None,
    *,
    methods: Any = (),
    metrics: Any = ("insertion", "deletion", "id_score"),
    attributions: Mapping[str, Tensor] | None = None,
    masks: Tensor | None = None,
    normalization: Normalization | tuple | str | None = None,
    sample_ids: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    target: str = "label",
    seed: int = 0,
    return_curves: bool = False,
    out: str | Path | None = None,
    progress: bool = False,
    model_name: str = "model",
    dataset_name: str | None = None,
    suite_name: str = "evaluate",
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Score attribution methods on an in-memory model and samples; return ``scores.csv``.

    Runs one suite (this dataset x this model x ``methods`` x ``metrics``) through the
    benchmark runner, exactly as ``saliencybench run`` would, and returns its long-format
    scores: one row per (suite, dataset, model, method, metric, sample_id) with ``value`` and
    ``status`` (``ok``, or why the sample was rejected). ``saliencybench.leaderboard(scores)``
    renders the markdown table.

    Args:
        model: any classifier ``nn.Module`` returning (N, classes) logits. It is left as it
            was: it runs in eval mode and its train/eval flags are restored afterwards; on
            another ``device`` a copy is moved there, never the model itself. Layer methods
            (CAMs) use ``model.sb_layers["cam"]`` when set, else a ``layer4`` / ``features``
            module; otherwise pass the layer, e.g. ``{"gradcam": {"layer": "features.3"}}``
            (without one their rows carry ``status`` ``method_error: ... no layer 'cam'``).
        inputs: (N,C,H,W) tensor (or numpy array) of model inputs (as the model sees them,
            cast to the model's dtype), a
            :class:`SampleSet` (``saliencybench.load_dataset(...)``: targets, masks,
            normalization and sample ids come with it), or an iterable such as a torch
            ``DataLoader`` yielding ``x``, ``(x, y)``, ``(x, y, mask)`` or dicts with keys
            ``x`` / ``y`` / ``mask`` (concatenated in memory).
        targets: (N,) class indices, the label scored (and explained, with ``target="label"``);
            with ``target="predicted"`` they may be omitted (the predictions are used).
        methods: registered method names or wildcards (``"lrp*"``), as a list, a comma string
            or a dict; an entry may carry parameters, ``{"name": {params}}``, and
            ``{"alias": {"base": "gradcam", "layer": "layer2"}}`` runs ``gradcam`` under the name
            ``alias``, like ``[methods.alias] base = "gradcam"`` in a suite TOML.
        metrics: registered metric names, with parameters and aliases as for ``methods``.
        attributions: maps computed elsewhere (tensors or numpy arrays),
            ``{"name": (N,H,W) | (N,1,H,W) | (N,C,H,W)}``
            (Quantus' ``a_batch``), scored and ranked alongside ``methods``. Channels are summed
            and smaller maps upsampled bilinearly, as for a registered method; non-finite maps
            get the ``nonfinite_attribution`` status. Metrics that re-run the method on other
            inputs (``mia``, ``conservation_error``) give no rows for them.
        masks: (N,H,W) or (N,1,H,W) object masks for the localization metrics.
        normalization: how ``inputs`` were normalised, a :class:`Normalization`, ``(mean, std)``
            or ``"imagenet"``; the perturbation substrates (black pixels, ...) are built in pixel
            space through it. Default: the SampleSet's own, else identity (inputs are pixels).
        sample_ids: one name per input (default ``000000``, ``000001``, ...).
        device: where to run (default: the model's device); ``"auto"`` picks CUDA when present.
        batch_size: images per attribution batch (metric forwards use up to 8x as many).
        target: ``"label"`` explains ``targets``; ``"predicted"`` explains the model's
            prediction, as the suite option of the same name.
        seed: seed of the stochastic methods (per-sample seeds, independent of batching).
        return_curves: also return the long-format curves (``curves.csv``: one row per
            (..., sample_id, step) with abscissa ``x`` and ``value``) as ``(scores, curves)``.
        out: keep the results directory (``scores.csv``, ``curves.csv``, ``run.json``,
            attribution ``cache/``) there; it must be new or empty. Default: a temporary
            directory, removed before returning.
        progress: show a progress bar (and tracebacks of method errors) on stderr.
        model_name, dataset_name, suite_name: the ``model`` / ``dataset`` / ``suite`` columns.

    Returns:
        The scores DataFrame (columns ``suite, dataset, model, method, metric, sample_id,
        value, status``), or ``(scores, curves)`` with ``return_curves=True``. The run
        manifest (``run.json``: forward passes, timings, failures, methods that do not apply
        to the model) is in ``scores.attrs["manifest"]``.

    Raises:
        saliencybench.core.registry.UnknownNameError: an unknown method or metric name
            (with a "did you mean" suggestion).
        ValueError / TypeError: inputs, targets, masks or attributions of the wrong shape or type.
    """
    from saliencybench.benchmark.config import SuiteConfig
    from saliencybench.benchmark.runner import Runner, predicted_classes
    from saliencybench.benchmark.store import read_curves, read_scores

    populate()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if target not in ("label", "predicted"):
        raise ValueError(f"target must be 'label' or 'predicted', got {target!r}")

    # -- samples -----------------------------------------------------------------------------
    norm = _as_normalization(normalization)
    if isinstance(inputs, SampleSet):
        if targets is not None or masks is not None or sample_ids is not None:
            raise ValueError("a SampleSet carries its own targets, masks and sample ids; "
                             "pass inputs=samples.x, targets=samples.y, ... to change them")
        samples = inputs.subset(range(len(inputs)))
        samples.normalization = norm or inputs.normalization
        ds_name = dataset_name or inputs.name or "data"
    else:
        if isinstance(inputs, np.ndarray):  # Quantus users' x_batch
            inputs = torch.from_numpy(inputs)
        if not isinstance(inputs, Tensor):
            if not hasattr(inputs, "__iter__"):
                raise TypeError(f"inputs must be a tensor (N,C,H,W), a SampleSet or a DataLoader; "
                                f"got {type(inputs).__name__}")
            x, y_loader, m_loader = _from_loader(inputs)
            if y_loader is not None and targets is not None:
                raise ValueError("the DataLoader yields targets; do not pass targets= as well")
            if m_loader is not None and masks is not None:
                raise ValueError("the DataLoader yields masks; do not pass masks= as well")
            targets = y_loader if y_loader is not None else targets
            masks = m_loader if m_loader is not None else masks
        else:
            x = inputs
        x, y, masks = _check_inputs(x, targets, masks, sample_ids, predicted=target == "predicted")
        samples = None  # built below, once the number of classes is known
        ds_name = dataset_name or "data"

    # -- model: on the device, eval mode; restored afterwards --------------------------------
    dev = torch.device(device) if isinstance(device, torch.device) else None
    if dev is None:
        if device is None:
            dev = _model_device(model)
        else:
            from saliencybench.benchmark.runner import resolve_device

            dev = resolve_device(str(device))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    run_model = model if _model_device(model) == dev else copy.deepcopy(model).to(dev)
    training = {name: m.training for name, m in run_model.named_modules()}
    run_model.eval()
    try:
        dtype = next((p.dtype for p in run_model.parameters() if p.is_floating_point()), None)
        if dtype is not None and samples is None and x.dtype != dtype:
            x = x.to(dtype)  # e.g. float64 numpy arrays for a float32 model
        probe = samples.get([0]).x if samples is not None else x[:1]
        with torch.no_grad():
            try:
                logits = run_model(probe.to(dev))
            except Exception as e:
                raise ValueError(f"the model cannot run on inputs of shape {tuple(probe.shape[1:])} "
                                 f"per sample: {type(e).__name__}: {e}") from e
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            raise ValueError("the model must return (N, classes) logits, got "
                             + (f"shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__))
        num_classes = int(logits.shape[1])
        if samples is None:
            if y is None:  # target="predicted" without labels
                y = predicted_classes(run_model, x, batch_size, dev).cpu()
            if int(y.min()) < 0 or int(y.max()) >= num_classes:
                raise ValueError(f"targets must lie in [0, {num_classes}) for a model with {num_classes} "
                                 f"outputs; got {int(y.min())}..{int(y.max())}")
            samples = SampleSet(x, y, normalization=norm or IDENTITY_NORMALIZATION, num_classes=num_classes,
                                sample_ids=None if sample_ids is None else [str(s) for s in sample_ids],
                                mask=masks, name=ds_name, info={"source": "saliencybench.evaluate"})
        if len(samples.normalization.mean) != samples.x.shape[1]:
            if samples.normalization is IDENTITY_NORMALIZATION:
                c = int(samples.x.shape[1])
                samples.normalization = Normalization((0.0,) * c, (1.0,) * c)
            else:
                raise ValueError(f"normalization has {len(samples.normalization.mean)} channels, "
                                 f"the inputs {samples.x.shape[1]}")
        samples.name = ds_name

        # -- suite -------------------------------------------------------------------------
        method_names, method_params = _parse_specs(methods, "method")
        metric_names, metric_params = _parse_specs(metrics, "metric")
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
            if maps.ndim not in (3, 4) or maps.shape[0] != len(samples):
                raise ValueError(f"attributions['{name}'] has shape {tuple(maps.shape)}; expected "
                                 f"({len(samples)}, H, W), ({len(samples)}, 1, H, W) or ({len(samples)}, C, H, W)")
            extra[name] = precomputed_entry(name)
        if not method_names and not extra:
            raise ValueError("nothing to score: give methods=[...] and/or attributions={name: maps}")
        if not metric_names:
            raise ValueError("no metrics given")
        cfg = SuiteConfig(
            name=suite_name, datasets=[ds_name], models=[model_name],
            methods=method_names + list(extra), metrics=metric_names, n_samples=None,
            batch_size=batch_size, seed=seed, device=str(dev), target=target, figures=False,
            method_params=method_params, metric_params=metric_params,
            source="saliencybench.evaluate",
        )
        with _results_dir(out) as out_dir:
            runner = Runner(cfg, out_dir, device=str(dev), progress=progress, figures=False,
                            models={model_name: run_model}, samples={ds_name: samples}, extra_methods=extra)
            for name, maps in pre.items():
                runner.provide_attributions(ds_name, model_name, name, maps)
            manifest = runner.run()
            scores = read_scores(out_dir)
            curves = read_curves(out_dir) if return_curves else None
    finally:
        for name, m in run_model.named_modules():
            if name in training:
                m.training = training[name]
    scores.attrs["manifest"] = manifest
    return (scores, curves) if return_curves else scores


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
    from saliencybench.benchmark.store import SCORE_COLUMNS

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
