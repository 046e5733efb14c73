"""Perturbation curves: closed-form cases, tie rules, shared forwards, bad maps, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from saliencybench.attributions.postprocess import gaussian_smooth
from saliencybench.core.registry import METRICS
from saliencybench.core.types import (
    IDENTITY_NORMALIZATION,
    IMAGENET_NORMALIZATION,
    Batch,
    EvalContext,
)
from saliencybench.metrics.curve_engine import count_grid, make_substrate, unit_ranks
from saliencybench.metrics.pixel_perturbation import PerturbationCurve, resolve_settings


class MeanModel(nn.Module):
    """Logit 0 = mean of all input values (so a masked pixel contributes its substrate)."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([m, torch.zeros_like(m)], 1)


def make_ctx(model, x, y=None, *, norm=IDENTITY_NORMALIZATION, seed=0, ids=None, max_batch=64):
    b = x.shape[0]
    y = torch.zeros(b, dtype=torch.long) if y is None else y
    ids = ids or [f"s{i}" for i in range(b)]
    return EvalContext(model=model, batch=Batch(x, y, ids), target=y, normalization=norm,
                       num_classes=2, seed=seed, max_batch=max_batch)


def metric(kind, **kw):
    entry = METRICS.get(kind)
    params = {**entry.meta["defaults"], **kw}
    return entry.obj(name=kw.pop("name", kind), **params)


EXACT = dict(preset="none", substrate="black", pixels_per_step=4, grid="inclusive",
             auc="trapezoid", output="logit", ties="random")


def run(metrics, ctx, a):
    return type(metrics[0]).evaluate_group(metrics, ctx, a)


# -- closed-form cases ---------------------------------------------------------------------------

def test_constant_image_gives_linear_curves_auc_half():
    x = torch.ones(2, 3, 8, 8)
    a = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    out = run([metric("insertion", **EXACT), metric("deletion", **EXACT)], make_ctx(MeanModel(), x), a)
    assert torch.allclose(out["insertion"].values, torch.full((2,), 0.5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out["deletion"].values, torch.full((2,), 0.5, dtype=torch.float64), atol=1e-6)
    assert out["insertion"].curve.shape == (2, 17)
    assert torch.allclose(out["insertion"].curve_x, torch.linspace(0, 1, 17))


def test_oracle_attribution_matches_sorted_cumulative_sums():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 8, 8, generator=g)
    a = x.sum(1, keepdim=True)  # oracle: the pixel's contribution to the mean
    out = run([metric("insertion", **EXACT), metric("deletion", **EXACT), metric("id_score", **EXACT)],
              make_ctx(MeanModel(), x), a)
    for i in range(3):
        p = np.sort(a[i].flatten().numpy().astype(np.float64))[::-1] / x[i].numel()
        cum = np.concatenate([[0.0], np.cumsum(p)])[::4]
        frac = np.arange(0, 65, 4) / 64
        ins = np.trapezoid(cum, frac)
        dele = np.trapezoid(p.sum() - cum, frac)
        assert out["insertion"].values[i].item() == pytest.approx(ins, abs=1e-6)
        assert out["deletion"].values[i].item() == pytest.approx(dele, abs=1e-6)
        assert out["id_score"].values[i].item() == pytest.approx(ins - dele, abs=1e-6)
        # ins + del = mean(x) at every point for a linear model with a zero substrate
        assert (out["insertion"].values[i] + out["deletion"].values[i]).item() == pytest.approx(
            x[i].mean().item(), abs=1e-6)
    # the oracle ranks best: beats the reversed attribution
    rev = run([metric("insertion", **EXACT)], make_ctx(MeanModel(), x), -a)["insertion"].values
    assert bool((out["insertion"].values > rev).all())


@pytest.mark.parametrize("const", [0.0, 3.5])
def test_constant_or_zero_map_with_threshold_ties_enters_at_once(const):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    a = torch.full((2, 1, 8, 8), const)
    kw = {**EXACT, "ties": "threshold"}
    out = run([metric("insertion", **kw), metric("deletion", **kw)], make_ctx(MeanModel(), x), a)
    m = x.flatten(1).mean(1).double()
    s_over_n = 4 / 64
    assert torch.allclose(out["insertion"].values, m * (1 - s_over_n / 2), atol=1e-6)
    assert torch.allclose(out["deletion"].values, m * s_over_n / 2, atol=1e-6)
    ins_curve = out["insertion"].curve
    assert torch.allclose(ins_curve[:, 0], torch.zeros(2))
    assert torch.allclose(ins_curve[:, 1:], m.float().view(-1, 1).expand(-1, 16))


def test_constant_map_with_random_ties_is_seeded_and_batch_independent(tiny_cnn):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    a = torch.zeros(3, 1, 32, 32)
    kw = dict(preset="none", pixels_per_step=64, ties="random", substrate="zero")
    v_batch = run([metric("deletion", **kw)], make_ctx(tiny_cnn, x, ids=["a", "b", "c"]), a)["deletion"].values
    v_again = run([metric("deletion", **kw)], make_ctx(tiny_cnn, x, ids=["a", "b", "c"]), a)["deletion"].values
    v_single = run([metric("deletion", **kw)], make_ctx(tiny_cnn, x[1:2], ids=["b"]), a[1:2])["deletion"].values
    ctx7 = make_ctx(tiny_cnn, x, ids=["a", "b", "c"], seed=7)
    v_other_seed = run([metric("deletion", **kw)], ctx7, a)["deletion"].values
    assert torch.equal(v_batch, v_again)
    assert v_single[0].item() == pytest.approx(v_batch[1].item(), abs=1e-6)
    assert not torch.allclose(v_batch, v_other_seed)


def test_random_tie_rule_orders_ties_randomly_but_keeps_strict_order():
    scores = torch.tensor([[1.0, 5.0, 1.0, 1.0, 3.0, 1.0]])
    r1 = unit_ranks(scores, "random", [1])
    assert r1[0, 1].item() == 0 and r1[0, 4].item() == 1
    assert sorted(r1[0, [0, 2, 3, 5]].tolist()) == [2, 3, 4, 5]
    rs = {tuple(unit_ranks(scores, "random", [s])[0].tolist()) for s in range(20)}
    assert len(rs) > 1
    thr = unit_ranks(scores, "threshold")
    assert thr[0].tolist() == [2, 0, 2, 2, 1, 2]
    assert unit_ranks(scores, "stable")[0].tolist() == [2, 0, 3, 4, 1, 5]


# -- grids, presets, substrates ------------------------------------------------------------------

def test_otsuki_grid_follows_authors_thresholds():
    s = resolve_settings({"preset": "otsuki2024"})
    counts = count_grid(4096, s)
    assert counts == [501, 1001, 1501, 2001, 2501, 3001, 3501, 4001, 4096]
    assert s.substrate == "black" and s.ties == "threshold" and s.target == "label"
    grid = count_grid(64, resolve_settings({"preset": "none", "pixels_per_step": 10}))
    assert grid == [0, 10, 20, 30, 40, 50, 60, 64]
    assert count_grid(64, resolve_settings({"preset": "none", "steps": 4})) == [0, 16, 32, 48, 64]


def test_rise_preset_substrates_and_predicted_target():
    s = resolve_settings({"preset": "rise2018", "kind": "insertion"})
    assert (s.ins_substrate, s.del_substrate, s.target, s.pixels_per_step) == ("blur", "zero", "predicted", 224)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)) + 0.1
    a = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    ctx = make_ctx(MeanModel(), x, y=torch.ones(2, dtype=torch.long))  # label 1, predicted 0
    kw = dict(preset="rise2018", pixels_per_step=8, output="logit")
    out = run([metric("insertion", **kw), metric("deletion", **kw)], ctx, a)
    blurred_mean = gaussian_smooth(x, 11, 5.0).flatten(1).mean(1)
    assert torch.allclose(out["insertion"].curve[:, 0], blurred_mean, atol=1e-6)
    assert torch.allclose(out["insertion"].curve[:, -1], x.flatten(1).mean(1), atol=1e-6)
    assert torch.allclose(out["deletion"].curve[:, -1], torch.zeros(2), atol=1e-7)
    assert ctx.forward_counter["insertion"] > 0


def test_substrates():
    x = torch.randn(2, 3, 4, 4)
    black = make_substrate("black", x, IMAGENET_NORMALIZATION)
    assert torch.allclose(IMAGENET_NORMALIZATION.to_pixel(black), torch.zeros_like(x), atol=1e-6)
    assert torch.equal(make_substrate("zero", x, IMAGENET_NORMALIZATION), torch.zeros_like(x))
    mn = make_substrate("min", x, IMAGENET_NORMALIZATION)
    assert torch.allclose(mn[:, :, 0, 0], x.flatten(1).amin(1).view(-1, 1).expand(-1, 3))
    mean = make_substrate("mean", x, IMAGENET_NORMALIZATION)
    assert torch.allclose(mean[:, :, 1, 2], x.mean((2, 3)))


def test_patches_and_relative_output():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(8)) + 0.5
    a = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    kw = {**EXACT, "patch_size": 2, "pixels_per_step": 8, "relative": True}
    out = run([metric("insertion", **kw)], make_ctx(MeanModel(), x), a)["insertion"]
    assert out.curve.shape == (2, 9)  # 16 patches, 2 patches per step
    assert torch.allclose(out.curve[:, -1], torch.ones(2), atol=1e-6)
    with pytest.raises(ValueError, match="unknown perturbation metric parameter"):
        metric("insertion", pixel_per_step=3)
    with pytest.raises(ValueError, match="substrate"):
        metric("insertion", substrate="grey")


# -- shared forwards -----------------------------------------------------------------------------

def test_bundle_costs_two_curves_and_equals_separate_runs(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(10))
    kw = dict(preset="none", pixels_per_step=64, substrate="black")  # 16 steps, 17 points
    names = ["insertion", "deletion", "lerf", "morf"]
    ctx = make_ctx(tiny_cnn, x, y, norm=IMAGENET_NORMALIZATION)
    out = run([metric(n, **kw) for n in names], ctx, a)
    total = sum(ctx.forward_counter.values())
    assert total == 2 * 16 * 4  # 2 curves minus the shared unperturbed / all-substrate images
    assert total <= 2 * 17 * 4
    assert torch.equal(out["lerf"].curve, out["insertion"].curve.flip(1))
    assert torch.equal(out["morf"].curve, out["deletion"].curve)
    sep_total = 0
    for n in names:
        c = make_ctx(tiny_cnn, x, y, norm=IMAGENET_NORMALIZATION)
        single = run([metric(n, **kw)], c, a)[n]
        sep_total += sum(c.forward_counter.values())
        assert torch.allclose(single.values, out[n].values, atol=1e-6)
    assert sep_total == 4 * 17 * 4
    # the group key lets the runner group them
    assert len({metric(n, **kw).group_key() for n in names}) == 1
    # lerf higher is better / morf lower is better, registered as such
    assert METRICS.get("lerf").meta["higher_is_better"] and not METRICS.get("morf").meta["higher_is_better"]


@pytest.mark.parametrize("preset", ["otsuki2024", "none"])
def test_measurement_keys_match_exactly_the_identical_metrics(tiny_cnn, tiny_batch, preset):
    """LeRF = Insertion and MoRF = Deletion (values, per sample) on one substrate, and their
    measurement keys say so from the run.json records; another substrate for LeRF / MoRF
    makes them a different measurement, and the keys say that too."""
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(12))
    kw = dict(preset=preset, pixels_per_step=128)
    names = ["insertion", "deletion", "id_score", "lerf", "morf", "lerf_morf_gap"]
    for sub, same in (("black", True), ("mean", False)):
        ms = [metric(n, **kw) if n in ("insertion", "deletion", "id_score") else metric(n, substrate=sub, **kw)
              for n in names]
        out = run(ms, make_ctx(tiny_cnn, x, y, norm=IMAGENET_NORMALIZATION), a)
        key = {m.name: PerturbationCurve.measurement_key(m.manifest()) for m in ms}
        for a_, b_ in (("lerf", "insertion"), ("morf", "deletion"), ("lerf_morf_gap", "id_score")):
            assert (key[a_] == key[b_]) is same, (a_, sub)
            assert torch.allclose(out[a_].values, out[b_].values, atol=1e-12) is same, (a_, sub)
        parts = {m.name: PerturbationCurve.components(m.manifest()) for m in ms}
        assert parts["id_score"] == (key["insertion"], key["deletion"])
        assert parts["lerf_morf_gap"] == (key["lerf"], key["morf"])
        assert parts["insertion"] == () and parts["morf"] == ()
    # any other curve parameter makes the curves differ: not identical
    k1 = PerturbationCurve.measurement_key(metric("lerf", **kw).manifest())
    k2 = PerturbationCurve.measurement_key(metric("insertion", **{**kw, "pixels_per_step": 64}).manifest())
    assert k1 != k2


def test_gap_and_id_are_differences(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(11))
    kw = dict(preset="none", pixels_per_step=128)
    out = run([metric(n, **kw) for n in ["insertion", "deletion", "id_score", "lerf", "morf", "lerf_morf_gap"]],
              make_ctx(tiny_cnn, x, y), a)
    assert torch.allclose(out["id_score"].values, out["insertion"].values - out["deletion"].values)
    assert torch.allclose(out["lerf_morf_gap"].values, out["lerf"].values - out["morf"].values)


def test_small_max_batch_gives_same_scores(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(12))
    big = run([metric("insertion")], make_ctx(tiny_cnn, x, y, max_batch=256), a)["insertion"]
    small = run([metric("insertion")], make_ctx(tiny_cnn, x, y, max_batch=3), a)["insertion"]
    assert torch.allclose(big.values, small.values, atol=1e-6)


# -- bad attributions ----------------------------------------------------------------------------

def test_nonfinite_map_gets_status_and_nan_others_unaffected(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(13))
    bad = a.clone()
    bad[1, 0, 3, 3] = float("nan")
    bad[2, 0, 0, 0] = float("inf")
    out = run([metric("insertion"), metric("deletion")], make_ctx(tiny_cnn, x, y), bad)["insertion"]
    assert out.status == ["ok", "nonfinite_attribution", "nonfinite_attribution", "ok"]
    assert torch.isnan(out.values[1]) and torch.isnan(out.values[2])
    good = run([metric("insertion")], make_ctx(tiny_cnn, x[[0, 3]], y[[0, 3]], ids=["s0", "s3"]),
               a[[0, 3]])["insertion"]
    assert torch.allclose(out.values[[0, 3]], good.values, atol=1e-6)
    allbad = run([metric("insertion")], make_ctx(tiny_cnn, x, y), torch.full_like(a, float("nan")))["insertion"]
    assert allbad.status == ["nonfinite_attribution"] * 4 and torch.isnan(allbad.values).all()


# -- properties ----------------------------------------------------------------------------------

_MODEL = None


def _model():
    global _MODEL
    if _MODEL is None:
        torch.manual_seed(0)
        _MODEL = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                               nn.Flatten(), nn.Linear(16, 3)).eval()
    return _MODEL


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), step=st.sampled_from([3, 8, 16, 64]),
       substrate=st.sampled_from(["black", "zero", "mean", "blur"]),
       ties=st.sampled_from(["random", "threshold"]), const=st.booleans())
def test_softmax_aucs_in_unit_interval(seed, step, substrate, ties, const):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=g) * 3
    a = torch.zeros(2, 1, 8, 8) if const else torch.randn(2, 1, 8, 8, generator=g)
    kw = dict(preset="none", pixels_per_step=step, substrate=substrate, ties=ties)
    out = run([metric(n, **kw) for n in ["insertion", "deletion", "lerf", "morf"]],
              make_ctx(_model(), x, torch.tensor([0, 2]), norm=IMAGENET_NORMALIZATION, seed=seed), a)
    for o in out.values():
        assert bool(((o.values >= 0) & (o.values <= 1)).all())
        assert bool(((o.curve >= 0) & (o.curve <= 1)).all())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), transform=st.sampled_from(["affine", "exp", "cube", "sigmoid"]))
def test_invariant_to_strictly_increasing_transform(seed, transform):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=g)
    a = torch.randperm(128, generator=g).float().view(2, 1, 8, 8) / 16 - 4  # tie-free, exact values
    f = {"affine": lambda t: 3 * t + 1, "exp": torch.exp, "cube": lambda t: t ** 3,
         "sigmoid": torch.sigmoid}[transform]
    b = f(a.double()).float()
    assert len(torch.unique(b[0])) == 64  # still tie-free after the transform
    kw = dict(preset="none", pixels_per_step=8)
    ctx = lambda: make_ctx(_model(), x, torch.tensor([1, 2]))  # noqa: E731
    o1 = run([metric("insertion", **kw), metric("deletion", **kw)], ctx(), a)
    o2 = run([metric("insertion", **kw), metric("deletion", **kw)], ctx(), b)
    for k in o1:
        assert torch.equal(o1[k].values, o2[k].values)


def test_amp_is_ignored_on_cpu(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(14))
    v0 = run([metric("insertion")], make_ctx(tiny_cnn, x, y), a)["insertion"].values
    v1 = run([metric("insertion", amp="bf16")], make_ctx(tiny_cnn, x, y), a)["insertion"].values
    assert torch.equal(v0, v1)
    assert metric("insertion", amp="bf16").group_key() != metric("insertion").group_key()


def test_one_uniform_auc_for_torch_and_numpy():
    """The uniform trapezoid (sum - y_0/2 - y_T/2)/T (Petsiuk et al. 2018; Otsuki et al. 2024's
    code) is one function: the engine's curves and the Quantus adapter's NumPy curves share it."""
    from saliencybench.metrics.curve_engine import curve_auc, uniform_auc

    c = torch.rand(3, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(curve_auc(c, torch.linspace(0, 1, 9), "uniform"), uniform_auc(c))
    # same formula; NumPy and torch sum in different orders (last-bit differences)
    np.testing.assert_allclose(uniform_auc(c.numpy()), uniform_auc(c).numpy(), rtol=1e-15)
    assert torch.equal(uniform_auc(c[:, :1]), c[:, 0])


def test_maps_of_any_shape_score_like_their_channel_sum():
    """(B,H,W), (B,1,H,W) and (B,C,H,W) maps go through one normalisation (channels summed)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 8, 8, generator=g)
    a = torch.rand(2, 3, 8, 8, generator=g)
    ref = run([metric("insertion", **EXACT)], make_ctx(MeanModel(), x), a.sum(1, keepdim=True))["insertion"].values
    for shaped in (a, a.sum(1)):
        out = run([metric("insertion", **EXACT)], make_ctx(MeanModel(), x), shaped)["insertion"]
        assert torch.equal(out.values, ref)
