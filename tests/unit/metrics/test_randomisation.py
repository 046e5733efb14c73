"""Model-parameter randomisation (Adebayo et al. 2018, Sec. 3.1): the original model is never
touched, a model-independent method keeps similarity 1, a gradient method does not, the batched
similarities equal scipy / scikit-image, and the per-layer curve equals Quantus's MPRT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import saliencybench as sb
from saliencybench.attributions.base import compute_attribution
from saliencybench.core.registry import METHODS, METRICS
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext
from saliencybench.metrics.randomisation import (
    randomisable_layers,
    randomised_models,
    spearman_abs,
    ssim,
    ssim_abs,
)


@pytest.fixture
def edge_method():
    """A method that ignores the model: the gradient magnitude of the input (Sobel)."""
    name = "test_sobel_edges"

    @sb.register_method(name, family="test", postprocess=())
    def sobel(model, x, target, **kw):
        k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device)
        g = x.mean(1, keepdim=True)
        gx = F.conv2d(g, k.view(1, 1, 3, 3), padding=1)
        gy = F.conv2d(g, k.t().reshape(1, 1, 3, 3), padding=1)
        return (gx.square() + gy.square()).sqrt()

    yield name
    METHODS.remove(name)


def _ctx(model: nn.Module, method: str, x: torch.Tensor, target: torch.Tensor) -> EvalContext:
    def attribute(xx, tgt, reduce=True, model=model, **kw):
        return compute_attribution(method, model, xx, tgt, params=kw, reduce=reduce)

    return EvalContext(model=model, batch=Batch(x, target, [str(i) for i in range(len(x))]), target=target,
                       normalization=IDENTITY_NORMALIZATION, num_classes=5, method=method, attribute=attribute)


def _evaluate(metric_name: str, model: nn.Module, method: str, x: torch.Tensor, target: torch.Tensor, **params):
    entry = METRICS.get(metric_name)
    metric = entry.obj(name=metric_name, **{**entry.meta["defaults"], **params})
    ctx = _ctx(model, method, x, target)
    return metric.evaluate(ctx, compute_attribution(method, model, x, target))


def test_original_model_is_untouched(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    calls = []
    handle = tiny_cnn.features[0].register_forward_hook(lambda *a: calls.append(1))
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    hooks = {n: dict(m._forward_hooks) for n, m in tiny_cnn.named_modules()}
    for metric in ("randomisation_cascading", "randomisation_independent"):
        _evaluate(metric, tiny_cnn, "saliency", x, y)
    after = tiny_cnn.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {n: dict(m._forward_hooks) for n, m in tiny_cnn.named_modules()} == hooks
    assert not tiny_cnn.training and all(p.grad is None for p in tiny_cnn.parameters())
    handle.remove()


def test_global_random_state_is_not_consumed(tiny_cnn):
    state = torch.random.get_rng_state()
    for _ in randomised_models(tiny_cnn, randomisable_layers(tiny_cnn), mode="cascading"):
        pass
    assert torch.equal(state, torch.random.get_rng_state())


def test_cascading_and_independent_layers(tiny_cnn):
    layers = randomisable_layers(tiny_cnn)
    assert layers == ["features.0", "features.3", "fc"]
    originals = {n: p.clone() for n, p in tiny_cnn.named_parameters()}
    changed = []
    for name, m in randomised_models(tiny_cnn, layers, mode="cascading"):
        changed.append(sorted({n.rsplit(".", 1)[0] for n, p in m.named_parameters()
                               if not torch.equal(p, originals[n])}))
    assert changed == [["fc"], ["fc", "features.3"], ["fc", "features.0", "features.3"]]
    for name, m in randomised_models(tiny_cnn, layers, mode="independent"):
        moved = {n.rsplit(".", 1)[0] for n, p in m.named_parameters() if not torch.equal(p, originals[n])}
        assert moved == {name}


def test_model_independent_method_scores_maximal_similarity(tiny_cnn, tiny_batch, edge_method):
    x, y = tiny_batch
    for metric in ("randomisation_cascading", "randomisation_independent"):
        for similarity in ("spearman", "ssim"):
            out = _evaluate(metric, tiny_cnn, edge_method, x, y, similarity=similarity)
            assert out.curve.shape == (len(x), 3)
            assert torch.allclose(out.values, torch.ones_like(out.values), atol=1e-12)
            assert out.status == ["ok"] * len(x) and out.extra["layers"]


def test_gradient_method_on_a_zoo_model_scores_lower(edge_method):
    model = sb.create_model("sb_resnet")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=g)
    y = model(x).argmax(1)
    layers = randomisable_layers(model)[-6:]  # the top of the network keeps the test fast
    grad = _evaluate("randomisation_cascading", model, "saliency", x, y, layers=layers)
    edges = _evaluate("randomisation_cascading", model, edge_method, x, y, layers=layers)
    assert torch.allclose(edges.values, torch.ones(4, dtype=edges.values.dtype), atol=1e-12)
    assert (grad.values < 0.9).all(), grad.values


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-3, 4, (5, 1, 6, 6), generator=g).double()
    b = torch.randint(-3, 4, (5, 1, 6, 6), generator=g).double()
    ours = spearman_abs(a, b)
    for i in range(5):
        ref = scipy_stats.spearmanr(a[i].abs().flatten().numpy(), b[i].abs().flatten().numpy())[0]
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)
    assert spearman_abs(a, a).allclose(torch.ones(5, dtype=torch.float64))
    const = torch.zeros(5, 1, 6, 6)
    assert torch.equal(spearman_abs(const, const), torch.ones(5, dtype=torch.float64))
    assert torch.equal(spearman_abs(const, a), torch.zeros(5, dtype=torch.float64))


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 20, 17, generator=g, dtype=torch.float64)
    b = (a + 0.3 * torch.rand(3, 1, 20, 17, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(a, b, data_range=1.0)
    for i in range(3):
        ref = metrics.structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)
    assert torch.allclose(ssim_abs(a, a), torch.ones(3, dtype=torch.float64))


def test_unknown_parameters_and_missing_model_keyword(tiny_cnn, tiny_batch):
    with pytest.raises(ValueError):
        METRICS.get("randomisation_cascading").obj(name="r", mode="sideways")
    with pytest.raises(ValueError):
        METRICS.get("randomisation_cascading").obj(name="r", steps=3)
    x, y = tiny_batch
    metric = METRICS.get("randomisation_cascading").obj(name="r")
    ctx = _ctx(tiny_cnn, "saliency", x, y)
    ctx.attribute = lambda xx, tgt, reduce=True, **kw: compute_attribution("saliency", tiny_cnn, xx, tgt)
    with pytest.raises(RuntimeError, match="model="):
        metric.evaluate(ctx, compute_attribution("saliency", tiny_cnn, x, y))


@pytest.mark.parametrize("order,metric", [("top_down", "randomisation_cascading"),
                                          ("independent", "randomisation_independent")])
def test_curve_matches_quantus_mprt(tiny_cnn, tiny_batch, order, metric):
    # Same layers (modules with reset_parameters, top down), same re-initialisation
    # (manual_seed(seed + 1) before each reset), same maps (|saliency|), Spearman per layer:
    # the per-layer similarities agree to 1e-6. By construction, Quantus's per-sample average
    # (return_average_correlation) also averages the "original" entry (similarity of the given
    # maps with the original model's, 1.0), so it is (1 + L * ours) / (L + 1).
    quantus = pytest.importorskip("quantus")
    from saliencybench.metrics.quantus_adapter import import_quantus

    import_quantus()
    x, y = tiny_batch
    a = compute_attribution("saliency", tiny_cnn, x, y)

    def explain(model, inputs, targets, **kw):
        xx = torch.as_tensor(inputs, dtype=torch.float32)
        return compute_attribution("saliency", model, xx, torch.as_tensor(targets)).detach().numpy()

    mprt = quantus.MPRT(layer_order=order, seed=42, disable_warnings=True)
    scores = mprt(model=tiny_cnn, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                  explain_func=explain, device="cpu", channel_first=True)
    out = _evaluate(metric, tiny_cnn, "saliency", x, y)
    assert list(scores)[1:] == out.extra["layers"]
    for j, layer in enumerate(out.extra["layers"]):
        assert np.allclose(out.curve[:, j].numpy(), np.asarray(scores[layer]), atol=1e-6)


def test_cascading_figure_is_written(tmp_path):
    from saliencybench.benchmark.report.randomisation import randomisation_figures

    rows = [{"suite": "s", "dataset": "d", "model": "m", "method": meth, "metric": metric, "sample_id": str(i),
             "step": j, "x": j + 1, "value": 1.0 - j * slope + 0.01 * i}
            for meth, slope in (("saliency", 0.3), ("guided_backprop", 0.05))
            for metric in ("randomisation_cascading", "deletion") for i in range(3) for j in range(3)]
    paths = randomisation_figures(pd.DataFrame(rows), tmp_path, layers={"m": ["conv1", "conv2", "fc"]})
    assert [p.name for p in paths] == ["randomisation_randomisation_cascading_d_m.png"]
    assert paths[0].stat().st_size > 1000
    assert randomisation_figures(pd.DataFrame(columns=list(rows[0])), tmp_path) == []
