"""conservation_error metric: LRP checkpoints (Otsuki et al. 2024 §5.5), completeness, applicability, figure."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from saliencybench.benchmark.report.conservation import conservation_figure, conservation_report, figure_rows
from saliencybench.core.registry import METHODS, METRICS
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext
from saliencybench.metrics.conservation import ConservationError


def _ctx(model, x, t, method, meta):
    return EvalContext(model=model, batch=Batch(x, t, [str(i) for i in range(len(t))]), target=t,
                       normalization=IDENTITY_NORMALIZATION, num_classes=10, method=method,
                       method_meta=meta)


def _resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_registered_and_applicability():
    entry = METRICS.get("conservation_error")
    assert entry.obj is ConservationError and entry.meta["higher_is_better"] is False
    m = ConservationError()
    assert m.needs_method
    assert m.applies_to({"conservation": "lrp"}) and m.applies_to({"conservation": "completeness"})
    assert not m.applies_to({"conservation": None}) and not m.applies_to({})


def test_lrp_resnet_errors_are_tiny_at_all_checkpoints():
    model = _resnet18()
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    meta = {**METHODS.get("lrp_resnet").meta, "params": dict(METHODS.get("lrp_resnet").meta["defaults"])}
    out = ConservationError().evaluate(_ctx(model, x, t, "lrp_resnet", meta), torch.zeros(3, 1, 32, 32))
    assert out.values.shape == (3,) and out.curve.shape == (3, 4)
    assert torch.equal(out.curve_x, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    # curve = [initial relevance p, sum at input, first block, last block]: conserved sums
    rel = (out.curve[:, 1:] - out.curve[:, :1]).abs() / out.curve[:, :1].abs()
    assert (rel < 1e-5).all()
    for k in ("input", "first_block", "last_block"):
        assert (out.extra["checkpoints"][k] < 1e-5).all()
    p = torch.softmax(model(x), 1)[torch.arange(3), t].detach().double()
    assert torch.allclose(out.extra["probability"], p, rtol=1e-5)
    assert set(out.extra["relevance_sum"]) == {"input", "first_block", "last_block"}


def test_lrp_epsilon_is_not_conservative_and_metric_shows_it():
    model = _resnet18()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(0.3)  # bias absorbs relevance under the epsilon rule (via fc bias too)
        model.fc.bias.fill_(1.0)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    e = METHODS.get("lrp_epsilon")
    out = ConservationError().evaluate(_ctx(model, x, t, "lrp_epsilon", {**e.meta, "params": e.meta["defaults"]}),
                                       torch.zeros(2, 1, 32, 32))
    assert (out.values > 1e-3).all()


def test_completeness_error_of_an_exact_linear_attribution():
    # for a linear model, gradient x (x - baseline) is complete: error ~ 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()

    def gxi(model, x, target, baseline=0.0, **kw):
        xx = x.clone().requires_grad_(True)
        out = model(xx)[torch.arange(len(target)), target].sum()
        (g,) = torch.autograd.grad(out, xx)
        return g * (x - baseline)

    METHODS.add("_test_complete", gxi, conservation="completeness", defaults={"baseline": 0.0})
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    meta = {**METHODS.get("_test_complete").meta, "params": {"baseline": 0.0}}
    out = ConservationError().evaluate(_ctx(model, x, t, "_test_complete", meta), torch.zeros(2, 1, 8, 8))
    assert (out.values < 1e-5).all()
    meta_bad = {**meta, "params": {"baseline": 0.5}}  # wrong reference: not complete
    bad = ConservationError().evaluate(_ctx(model, x, t, "_test_complete", meta_bad), torch.zeros(2, 1, 8, 8))
    assert torch.isfinite(bad.values).all()


def test_figure_from_metric_rows(tmp_path):
    model = _resnet18()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    e = METHODS.get("lrp_resnet")
    out = ConservationError().evaluate(_ctx(model, x, t, "lrp_resnet", {**e.meta, "params": e.meta["defaults"]}),
                                       torch.zeros(2, 1, 32, 32))
    df = figure_rows("lrp_resnet", out)
    assert list(df.columns) == ["method", "checkpoint", "relevance_sum", "probability"] and len(df) == 6
    png = conservation_figure(df, tmp_path / "fig7.png")
    assert png.is_file() and png.stat().st_size > 1000


def test_report_draws_fig7_from_stored_curves(tmp_path):
    """The Fig. 7 scatter is rebuilt from curves.csv rows alone."""
    import pandas as pd

    from saliencybench.benchmark.report.conservation import rows_from_curves

    rows = []
    for sid, (p, s_in, s_first, s_last) in {"a": (0.5, 0.5, 0.5, 0.5), "b": (0.9, 0.8, 0.9, 0.9)}.items():
        for step, v in enumerate((p, s_in, s_first, s_last)):
            rows.append(dict(suite="s", dataset="d", model="m", method="lrp_resnet", metric="conservation_error",
                             sample_id=sid, step=step, x=float(step), value=v))
    curves = pd.DataFrame(rows)
    df = rows_from_curves(curves)
    assert len(df) == 6 and set(df["checkpoint"]) == {"input", "first_block", "last_block"}
    b_in = df[(df.sample_id == "b") & (df.checkpoint == "input")].iloc[0]
    assert b_in.relevance_sum == 0.8 and b_in.probability == 0.9
    (tmp_path / "figures").mkdir()
    curves.to_csv(tmp_path / "curves.csv", index=False)
    paths = conservation_report(tmp_path, pd.DataFrame(), None)
    assert len(paths) == 1 and paths[0].stat().st_size > 1000


def test_conservation_ignores_the_runners_autocast():
    """The runner's --autocast wraps metric forwards; conservation_error recomputes LRP and
    f(x) - f(baseline) in the model's precision regardless (on CUDA, LRP under bf16 autocast
    failed with a dtype error). CPU autocast exercises the same switch."""
    model = _resnet18()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    for name in ("lrp_resnet", "integrated_gradients"):
        e = METHODS.get(name)
        ctx = lambda: _ctx(model, x, t, name, {**e.meta, "params": dict(e.meta["defaults"])})  # noqa: E731
        want = ConservationError().evaluate(ctx(), torch.zeros(2, 1, 32, 32))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = ConservationError().evaluate(ctx(), torch.zeros(2, 1, 32, 32))
        assert got.curve.dtype == want.curve.dtype
        torch.testing.assert_close(got.values, want.values)
        torch.testing.assert_close(got.curve, want.curve, equal_nan=True)
