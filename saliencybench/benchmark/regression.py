"""Score regression tracking against a committed baseline (results/default/).

Compares mean scores per (dataset, model, method, metric). Any change beyond the tolerance,
in either direction, fails: an improvement must be accepted on purpose too. Entries that
appear or disappear are reported as moved as well. Modelled on PyTorch's ``check_accuracy``
CSV baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from saliencybench.benchmark.results import read_scores

KEYS = ["dataset", "model", "method", "metric"]


@dataclass
class RegressionReport:
    table: pd.DataFrame  # all compared entries with baseline, new, delta, status
    tolerance: float

    @property
    def moved(self) -> pd.DataFrame:
        return self.table[self.table["status"] != "same"]

    @property
    def ok(self) -> bool:
        return self.moved.empty

    def render(self) -> str:
        if self.ok:
            return f"no score moved beyond tolerance {self.tolerance:g} ({len(self.table)} entries compared)"
        m = self.moved
        lines = [f"{len(m)} of {len(self.table)} entries moved beyond tolerance {self.tolerance:g}:", ""]
        head = (f"{'dataset':<12} {'model':<14} {'method':<24} {'metric':<18} "
                f"{'baseline':>10} {'new':>10} {'delta':>10}  status")
        lines.append(head)
        lines.append("-" * len(head))
        for r in m.itertuples():
            lines.append(f"{r.dataset:<12} {r.model:<14} {r.method:<24} {r.metric:<18} "
                         f"{_f(r.baseline):>10} {_f(r.new):>10} {_f(r.delta):>10}  {r.status}")
        return "\n".join(lines)


def _f(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.5f}"


def _means(scores: pd.DataFrame) -> pd.Series:
    ok = scores[scores["status"] == "ok"]
    return ok.groupby(KEYS)["value"].mean()


def compare_results(new_dir: Path, baseline_dir: Path, *, tolerance: float = 1e-4,
                    relative: bool = False) -> RegressionReport:
    """Compare ``new_dir``'s scores with ``baseline_dir``'s; tolerance absolute (or relative)."""
    new = _means(read_scores(new_dir))
    base = _means(read_scores(baseline_dir))
    idx = new.index.union(base.index)
    t = pd.DataFrame({"baseline": base.reindex(idx), "new": new.reindex(idx)})
    t["delta"] = t["new"] - t["baseline"]
    bound = tolerance * np.maximum(t["baseline"].abs(), 1e-12) if relative else tolerance
    status = np.where(t["baseline"].isna(), "added",
                      np.where(t["new"].isna(), "removed",
                               np.where(t["delta"].abs() > bound,
                                        np.where(t["delta"] > 0, "up", "down"), "same")))
    t["status"] = status
    return RegressionReport(t.reset_index(), tolerance)
