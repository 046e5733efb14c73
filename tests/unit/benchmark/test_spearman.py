"""Spearman correlation of localization scores (Rao et al. 2022 supp. §C, Tables 1-2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from saliencybench.benchmark.report.spearman import (
    kernel_sweep_table,
    plot_spearman,
    spearman,
    spearman_matrix,
)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 50).astype(float)
    b = a + rng.normal(0, 2, 50)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), b[:5]))
    assert spearman(np.array([1.0, np.nan, 3.0, 4.0]), np.array([4.0, 1.0, 2.0, 1.0])) == pytest.approx(
        spearmanr([1, 3, 4], [4, 2, 1]).statistic)


def _long(cols: dict[str, np.ndarray], model: str = "m") -> pd.DataFrame:
    rows = []
    for name, vals in cols.items():
        rows += [dict(model=model, method=name, sample_id=f"s{i}", value=float(v)) for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_matrix_pairs_samples_by_id():
    rng = np.random.default_rng(1)
    x = rng.random(40)
    df = _long({"a": x, "b": x**3, "c": -x, "d": rng.random(40)})
    df = df.sample(frac=1.0, random_state=0)  # order must not matter
    m = spearman_matrix(df, order=["a", "b", "c", "d"])
    assert list(m.index) == ["a", "b", "c", "d"]
    assert m.loc["a", "b"] == pytest.approx(1.0) and m.loc["a", "c"] == pytest.approx(-1.0)
    assert np.allclose(m.values, m.values.T, equal_nan=True)
    d = df[df.method == "d"].sort_values("sample_id", key=lambda s: s.str[1:].astype(int)).value
    assert m.loc["a", "d"] == pytest.approx(spearmanr(x, d).statistic)


def test_kernel_sweep_table_layout():
    rng = np.random.default_rng(2)
    ref = rng.random(60)
    cols = {"gradcam@final": ref, "integrated_gradients@input": rng.random(60),
            "s_intgrad_k9@input": ref + rng.normal(0, 0.5, 60), "s_intgrad_k33@input": ref + rng.normal(0, 0.1, 60),
            "ixg@input": rng.random(60), "s_ixg_k9": ref + rng.normal(0, 1.0, 60)}
    df = pd.concat([_long(cols, "vgg"), _long(cols, "resnet")])
    t = kernel_sweep_table(df, reference="gradcam@final")
    assert list(t.columns) == ["model", "family", "Original", "K=9", "K=33"]
    assert len(t) == 4
    row = t[(t.model == "vgg") & (t.family == "S-IntGrad")].iloc[0]
    assert row["K=33"] > row["K=9"] > row["Original"] - 0.5
    assert row["K=33"] == pytest.approx(spearmanr(ref, cols["s_intgrad_k33@input"]).statistic)
    assert np.isnan(t[(t.model == "vgg") & (t.family == "S-IxG")].iloc[0]["K=33"])


def test_plot_spearman(tmp_path):
    m = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["a", "b"], columns=["a", "b"])
    assert plot_spearman(m, tmp_path / "s.png").is_file()
