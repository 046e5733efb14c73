"""Speed of every registered method and of each metric family on the default-zoo models.

Saved as JSON with ``--benchmark-json`` / ``--benchmark-autosave`` and compared with
``--benchmark-compare --benchmark-compare-fail=mean:10%`` on a developer machine or GPU runner.
Weights do not change the cost, so the models are built without their checkpoints.
"""

from __future__ import annotations

import pytest
import torch

from saliencybench.attributions.base import compute_attribution
from saliencybench.core.registry import METHODS, METRICS, MODELS, populate
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext

populate()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
B = 8
ZOO = [m for m in ("sb_resnet", "sb_vgg") if m in MODELS]


def _model(name):
    m = MODELS.get(name).obj(pretrained=False).to(DEVICE).eval()
    return m


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 3, 64, 64, generator=g).to(DEVICE)
    y = torch.arange(B, device=DEVICE) % 4
    return x, y


def _applicable(name, model):
    from saliencybench.core.errors import NotApplicableError

    x, y = _inputs()
    try:
        compute_attribution(name, model, x[:1], y[:1])
    except NotApplicableError:
        return False
    return True


@pytest.mark.parametrize("model_name", ZOO)
@pytest.mark.parametrize("method", [e.name for e in METHODS])
def test_method_speed(benchmark, method, model_name):
    model = _model(model_name)
    if not _applicable(method, model):
        pytest.skip(f"{method} does not apply to {model_name} (NotApplicableError)")
    x, y = _inputs()
    benchmark.extra_info.update(images=B, device=str(DEVICE))
    benchmark.pedantic(compute_attribution, args=(method, model, x, y), rounds=2, iterations=1, warmup_rounds=0)


FAMILIES = {
    "perturbation_bundle": ["insertion", "deletion", "lerf", "morf"],
    "id_score": ["id_score"],
    "mia": ["mia"],
    "mass_in_mask": ["mass_in_mask", "pointing_game"],
    "conservation_error": ["conservation_error"],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_metric_family_speed(benchmark, family):
    names = [n for n in FAMILIES[family] if n in METRICS]
    if not names:
        pytest.skip(f"no metric of family {family} is registered")
    model = _model("sb_resnet")
    x, y = _inputs()
    method = "integrated_gradients" if family == "conservation_error" else "ixg"
    entry = METHODS.get(method)
    maps = compute_attribution(entry, model, x, y)
    metrics = [METRICS.get(n).obj(name=n, **METRICS.get(n).meta.get("defaults", {})) for n in names]
    mask = torch.zeros(B, 1, 64, 64, device=DEVICE)
    mask[..., 16:48, 16:48] = 1

    def run():
        ctx = EvalContext(model=model, batch=Batch(x, y, [str(i) for i in range(B)], mask), target=y,
                          normalization=IDENTITY_NORMALIZATION, num_classes=8, method=method,
                          method_meta={**entry.meta, "params": entry.meta["defaults"], "name": method},
                          attribute=lambda xx, tt, reduce=True, **kw: compute_attribution(
                              entry, model, xx, tt, reduce=reduce))
        groups = {}
        for m in metrics:
            if m.applies_to(ctx.method_meta):
                groups.setdefault((type(m), m.group_key()), []).append(m)
        for g in groups.values():
            type(g[0]).evaluate_group(g, ctx, maps)

    benchmark.extra_info.update(images=B, device=str(DEVICE), metrics=names)
    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
