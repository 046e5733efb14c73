"""Paired statistics of the leaderboard (Demšar 2006): paired tests, Holm, not-worse-than-best,
neighbours, critical-difference diagram."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saliencybench.benchmark.report.significance import (
    PairedTest,
    average_ranks,
    critical_difference_figure,
    holm,
    neighbour_pairs,
    nemenyi_cd,
    not_worse_than_best,
    paired_p_value,
    pairwise_table,
)


def _scores(values: dict[str, np.ndarray], metric: str = "insertion", model: str = "m") -> pd.DataFrame:
    rows = []
    for method, v in values.items():
        for i, x in enumerate(v):
            rows.append({"suite": "s", "dataset": "d", "model": model, "method": method, "metric": metric,
                         "sample_id": f"{i:03d}", "value": float(x), "status": "ok"})
    return pd.DataFrame(rows)


@pytest.fixture
def values() -> np.ndarray:
    return np.random.default_rng(0).normal(0.5, 0.2, 32)


@pytest.mark.parametrize("test", ["wilcoxon", "bootstrap"])
def test_identical_methods_do_not_differ(values, test):
    table = pairwise_table(_scores({"a": values, "b": values.copy()}), PairedTest(test=test))
    assert len(table) == 1 and table["p"].iloc[0] == 1.0 and not table["significant"].iloc[0]


@pytest.mark.parametrize("test", ["wilcoxon", "bootstrap"])
def test_a_method_and_its_negation_differ(values, test):
    table = pairwise_table(_scores({"a": values, "neg": -values}), PairedTest(test=test))
    assert table["p"].iloc[0] < 1e-3 and table["significant"].iloc[0]
    assert table["mean_diff"].iloc[0] == pytest.approx(2 * values.mean())


def test_wilcoxon_is_scipys_and_bootstrap_is_deterministic(values):
    from scipy import stats

    diff = values - np.roll(values, 1) * 0.9
    assert paired_p_value(diff) == stats.wilcoxon(diff).pvalue
    boot = PairedTest(test="bootstrap", seed=3)
    assert paired_p_value(diff, boot) == paired_p_value(diff, boot)
    with pytest.raises(ValueError):
        PairedTest(test="t-test")


def test_holm_on_known_p_values():
    # Holm 1979: sorted p (0.01, 0.02, 0.03, 0.04) times (4, 3, 2, 1) = (0.04, 0.06, 0.06, 0.04),
    # made monotone: (0.04, 0.06, 0.06, 0.06); capped at 1; NaN is left out of m.
    assert np.allclose(holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])
    assert np.allclose(holm([0.5, 0.9]), [1.0, 1.0])
    out = holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.02])
    assert len(holm([])) == 0


def test_not_worse_than_best_is_direction_aware(values):
    twin = values + 1.0 + np.random.default_rng(2).normal(0, 0.01, 32)
    block = _scores({"good": values + 1.0, "twin": twin, "bad": values})
    up = not_worse_than_best(block, higher_is_better=True)
    assert set(up[up["not_worse"]]["method"]) == {"good", "twin"}
    down = not_worse_than_best(block, higher_is_better=False)
    assert down[down["best"]]["method"].tolist() == ["bad"]
    assert set(down[down["not_worse"]]["method"]) == {"bad"}


def test_neighbours_and_critical_difference(values, tmp_path):
    rng = np.random.default_rng(1)
    blocks = []
    for b in range(6):
        noise = rng.normal(0, 0.01, 32)
        blocks.append(_scores({"a": values + 1 + noise, "b": values + 1 + noise[::-1], "c": values},
                              metric=f"metric{b}"))
    scores = pd.concat(blocks, ignore_index=True)
    direction = {f"metric{b}": True for b in range(6)}
    pairs = neighbour_pairs(scores, direction)
    assert len(pairs) == 12
    assert (pairs[pairs["lower"] == "c"]["significant"]).all()
    ranks, n = average_ranks(scores, direction)
    assert n == 6 and ranks.index[-1] == "c" and ranks["c"] == 3.0
    duplicated = pd.concat([scores, scores.assign(metric=scores["metric"] + "_copy")])
    assert average_ranks(duplicated, {**direction, **{f"{m}_copy": True for m in direction}})[1] == 6
    assert nemenyi_cd(3, 6) == pytest.approx(2.343 * np.sqrt(3 * 4 / 36), abs=2e-3)  # Demšar 2006, Table 5
    path = critical_difference_figure(scores, direction, tmp_path / "cd.png")
    assert path.exists() and path.stat().st_size > 1000
