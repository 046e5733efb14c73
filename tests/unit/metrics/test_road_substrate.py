"""The ``road`` substrate of the perturbation engine (Rong et al. 2022, ICML, Sec. 4): curves on
a toy model, the batched imputation against one call per image, and its measurement keys."""

from __future__ import annotations

import torch

from saliencybench.core.registry import METRICS
from saliencybench.core.seeding import stable_seed
from saliencybench.core.types import IMAGENET_NORMALIZATION, Batch, EvalContext
from saliencybench.metrics.curve_engine import ROAD_NOISE_STD, road_noise
from saliencybench.metrics.pixel_perturbation import PerturbationCurve
from saliencybench.metrics.road import noisy_linear_impute

ROAD = dict(preset="none", substrate="road", pixels_per_step=256, output="logit", ties="stable")


def _ctx(model, x, y, max_batch=64):
    ids = [f"s{i}" for i in range(x.shape[0])]
    return EvalContext(model=model, batch=Batch(x, y, ids), target=y, normalization=IMAGENET_NORMALIZATION,
                       num_classes=10, seed=0, max_batch=max_batch)


def _metric(kind, **kw):
    entry = METRICS.get(kind)
    return entry.obj(name=kind, **{**entry.meta["defaults"], **kw})


def _run(kinds, ctx, a, **kw):
    ms = [_metric(k, **kw) for k in kinds]
    return PerturbationCurve.evaluate_group(ms, ctx, a)


def test_road_curves_on_a_toy_model_are_finite_seeded_and_batch_independent(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    out = _run(["morf", "lerf"], _ctx(tiny_cnn, x, y), a, **ROAD)
    for k in ("morf", "lerf"):
        assert out[k].curve.shape == (4, 5) and torch.isfinite(out[k].values).all()
    again = _run(["morf", "lerf"], _ctx(tiny_cnn, x, y, max_batch=3), a, **ROAD)
    for k in ("morf", "lerf"):
        assert torch.allclose(out[k].curve, again[k].curve, atol=1e-4)
    # another substrate gives other curves: the imputation is not a no-op
    mean = _run(["morf"], _ctx(tiny_cnn, x, y), a, **{**ROAD, "substrate": "mean"})
    assert not torch.allclose(mean["morf"].curve[:, 1:-1], out["morf"].curve[:, 1:-1])


def test_batched_road_images_equal_one_imputation_call_per_image(tiny_cnn, tiny_batch):
    """The engine's MoRF scores equal, image by image, the model on noisy_linear_impute of that
    image's own removal mask plus the sample's seeded noise."""
    x, y = tiny_batch
    a = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    out = _run(["morf"], _ctx(tiny_cnn, x, y), a, **ROAD)["morf"]
    order = a.flatten(1).sort(dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(32 * 32).expand(4, -1).contiguous())
    rank = rank.view(4, 1, 32, 32)
    noise = road_noise(x, [stable_seed(0, "road-noise", f"s{i}") for i in range(4)])
    assert abs(float(noise.std()) - ROAD_NOISE_STD) < 2e-3
    for i in range(4):
        for t, n in enumerate((0, 256, 512, 768)):
            removed = rank[i:i + 1] < n
            img = noisy_linear_impute(x[i:i + 1], removed, noise_std=0.0) + removed * noise[i:i + 1]
            with torch.no_grad():
                want = tiny_cnn(img)[0, int(y[i])]
            assert torch.allclose(out.curve[i, t], want, atol=1e-4), (i, n)


def test_road_is_its_own_measurement():
    """With ROAD, LeRF / MoRF are other measurements than Insertion / Deletion on the default
    substrates (and than LeRF / MoRF on them); on ROAD itself LeRF and Insertion score the same
    images, so they are one measurement, as on any substrate."""
    key = {}
    for kind, sub in (("lerf", "road"), ("morf", "road"), ("insertion", "black"), ("deletion", "black"),
                      ("lerf", "mean"), ("morf", "mean"), ("insertion", "road")):
        key[kind, sub] = PerturbationCurve.measurement_key(_metric(kind, substrate=sub).manifest())
    assert len({key[k] for k in key if k != ("insertion", "road")}) == 6
    assert key["lerf", "road"] == key["insertion", "road"]
