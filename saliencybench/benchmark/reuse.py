"""Reuse of stored results (``compare``, reruns against a committed baseline).

A result part is taken from a baseline results directory only when the baseline's run.json
shows the same setup (method record, metric parameters, seed, target, dataset and model
parameters) and every (metric, sample) row the part needs is present; anything else is
recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from saliencybench.benchmark.config import SuiteConfig
from saliencybench.benchmark.results import load_results


def _canonical(obj: Any) -> Any:
    """JSON round trip (tuples become lists, keys sorted) so records compare as run.json stores them."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def setup_of(cfg: SuiteConfig, method_record: dict[str, Any], metrics: Sequence[Any], dataset: str,
             model: str) -> dict[str, Any]:
    """What must match for a part to be reused: the method record, the metrics' manifests
    and the context (seed, explained class, dataset and model parameters)."""
    return {
        "method": method_record,
        "metrics": {m.name: m.manifest() for m in metrics},
        "context": {"seed": cfg.seed, "target": cfg.explained,
                    "dataset": cfg.dataset_params.get(dataset, {}), "model": cfg.model_params.get(model, {})},
    }


class BaselineResults:
    """Stored ``scores.csv`` / ``curves.csv.gz`` of an earlier run, served as result parts."""

    def __init__(self, root: Path) -> None:
        res = load_results(root)
        self.root = Path(root)
        self.manifest = res.manifest
        self._scores = {k: g for k, g in res.scores.groupby(["dataset", "model", "method"], sort=False)}
        curves = res.curves
        self._curves = dict(iter(curves.groupby(["dataset", "model", "method"], sort=False))) if len(curves) else {}

    def same_setup(self, ds: str, model: str, method: str, want: dict[str, Any]) -> bool:
        """True when the baseline computed ``method`` with the setup in ``want`` (:func:`setup_of`)."""
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
        """The part's score and curve rows, or None when the baseline lacks any of them."""
        g = self._scores.get((ds, model, method))
        if g is None:
            return None
        s = g[g["metric"].isin(metrics) & g["sample_id"].isin(ids)]
        if len(s) != len(metrics) * len(ids):
            return None
        c = self._curves.get((ds, model, method))
        c = c[c["metric"].isin(metrics) & c["sample_id"].isin(ids)] if c is not None else pd.DataFrame()
        return s, c


class Reuse:
    """The baselines a run may take result parts from, in order of preference."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.baselines = [BaselineResults(Path(p)) for p in roots]

    def find(self, want: dict[str, Any], cell: tuple[str, str, str], metrics: list[str],
             ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """Rows of ``cell`` = (dataset, model, method) for ``metrics`` x ``ids`` from the first
        baseline with the same setup that has all of them."""
        ds, model, method = cell
        for base in self.baselines:
            if base.same_setup(ds, model, method, want):
                found = base.rows(ds, model, method, metrics, ids)
                if found is not None:
                    return found
        return None
