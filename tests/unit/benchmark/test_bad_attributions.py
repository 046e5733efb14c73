"""Every native per-sample metric on every kind of bad attribution map, through the runner.

Bad maps (NaN, +-inf, all zero, constant, negative only, float64, a tensor that cannot leave
the ``meta`` device) must never crash the run and never leave a silent NaN: each row either
has status ``ok`` and a finite value, or a non-ok status that says why, and a NaN value that
the leaderboard leaves out. The documented rules checked here:

- non-finite maps: the sample gets ``nonfinite_attribution`` (other samples are unaffected);
- constant / all-zero maps: every pixel ties; with the default tie handling ("threshold", the
  Otsuki et al. protocol) all tied pixels enter at once, so the two maps score the same;
- localization-type metrics count positive attribution only: a negative-only map puts no
  mass anywhere and scores 0;
- pointing game with ties: the fraction of maxima inside the mask (mask area for constants);
- a map that cannot be moved to the run's device is a per-sample ``method_error``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.toy import TOY_TOML, register_all
from saliencybench.benchmark.config import load_config
from saliencybench.benchmark.report.leaderboard import render_markdown
from saliencybench.benchmark.results import read_scores
from saliencybench.benchmark.runner import run_suite
from saliencybench.core.registry import METHODS, register_method

register_all()

METRICS = ["insertion", "deletion", "id_score", "lerf", "morf", "lerf_morf_gap",
           "mass_in_mask", "pointing_game"]


def _maps(kind: str, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    a = torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(0))
    if kind == "zeros":
        return torch.zeros(b, 1, h, w)
    if kind == "constant":
        return torch.full((b, 1, h, w), 3.0)
    if kind == "negative":
        return -a - 0.1
    if kind == "nan_all":
        return torch.full((b, 1, h, w), float("nan"))
    if kind == "posinf_one_pixel":
        a[:, :, 0, 0] = float("inf")
        return a
    if kind == "neginf_first_sample":
        a[0] = -float("inf")
        return a
    if kind == "float64":
        return a.double()
    if kind == "meta_device":
        return torch.empty(b, 1, h, w, device="meta")
    raise AssertionError(kind)


KINDS = ["zeros", "constant", "negative", "nan_all", "posinf_one_pixel", "neginf_first_sample",
         "float64", "meta_device"]

for _k in KINDS:
    if f"bad_{_k}" not in METHODS:
        register_method(f"bad_{_k}", family="baseline")(
            lambda model, x, target, _k=_k, **kw: _maps(_k, x))


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "toy.toml").write_text(TOY_TOML)
    cfg = load_config(d / "toy.toml")
    cfg.methods = ["toy_gxi", *(f"bad_{k}" for k in KINDS)]
    cfg.metrics = METRICS
    manifest = run_suite(cfg, d / "res", progress=False)
    return d / "res", read_scores(d / "res"), manifest


def test_every_row_is_a_finite_value_or_a_stated_reason(bad_run):
    _, s, _ = bad_run
    assert set(s.metric) == set(METRICS) and set(s.method) == {"toy_gxi", *(f"bad_{k}" for k in KINDS)}
    ok = s.status == "ok"
    assert np.isfinite(s.loc[ok, "value"]).all()
    assert s.loc[~ok, "value"].isna().all() and (s.loc[~ok, "status"].str.len() > 0).all()
    assert (s[s.method == "toy_gxi"].status == "ok").all()


def test_nonfinite_maps_are_rejected_per_sample(bad_run):
    _, s, _ = bad_run
    assert (s[s.method == "bad_nan_all"].status == "nonfinite_attribution").all()
    assert (s[s.method == "bad_posinf_one_pixel"].status == "nonfinite_attribution").all()
    neg = s[s.method == "bad_neginf_first_sample"]
    first = neg.sample_id.isin(["toy-000", "toy-004", "toy-008"])  # sample 0 of each batch of 4
    assert (neg[first].status == "nonfinite_attribution").all()
    assert (neg[~first].status == "ok").all() and np.isfinite(neg[~first].value).all()


def test_ties_zero_and_constant_maps_follow_the_documented_rule(bad_run):
    _, s, _ = bad_run
    z = s[s.method == "bad_zeros"].set_index(["metric", "sample_id"]).value.sort_index()
    c = s[s.method == "bad_constant"].set_index(["metric", "sample_id"]).value.sort_index()
    curves = ["insertion", "deletion", "id_score", "lerf", "morf", "lerf_morf_gap"]
    # all pixels tie: both maps give the identical curve, so identical AUCs
    assert np.allclose(z.loc[curves].values, c.loc[curves].values, atol=0, rtol=0)
    # no positive mass: 0; constant positive map: the mask's area fraction (8x8 of 16x16)
    assert (z.loc["mass_in_mask"] == 0).all()
    assert np.allclose(c.loc["mass_in_mask"], 0.25)
    assert np.allclose(c.loc["pointing_game"], 0.25)


def test_negative_only_maps_have_no_positive_mass(bad_run):
    _, s, _ = bad_run
    neg = s[s.method == "bad_negative"]
    assert (neg.status == "ok").all()
    assert (neg[neg.metric == "mass_in_mask"].value == 0).all()
    # the ranking of a negative map is still a ranking: its curves are real numbers in [0, 1]
    ins = neg[neg.metric == "insertion"].value
    assert ((ins >= 0) & (ins <= 1)).all()


def test_other_dtype_is_accepted_and_unmovable_maps_are_method_errors(bad_run):
    _, s, manifest = bad_run
    assert (s[s.method == "bad_float64"].status == "ok").all()
    meta = s[s.method == "bad_meta_device"]
    assert len(meta) and meta.status.str.startswith("method_error").all()
    assert any("bad_meta_device" in f for f in manifest["failures"])


def test_leaderboard_has_no_nan_cells(bad_run):
    out, _, _ = bad_run
    md = render_markdown(out)
    rows = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert len(rows) >= 1 + len(KINDS)
    cells = [c.strip().lower() for ln in rows for c in ln.split("|")[2:]]  # past the method name
    assert not any("nan" in c or "inf" in c for c in cells)
    # rejected samples are counted in the cell (⚠n), not averaged over
    nan_row = next(ln for ln in rows if ln.startswith("| `bad_nan_all`"))
    assert nan_row.count("⚠12") == len(METRICS)
