"""Speed of lrp_resnet on torchvision ResNet50 (random init), batch 8 at 224x224, on CUDA when
available, else on the CPU.

Compares, on the same batch and in one run: a plain input-gradient (saliency), our
``lrp_resnet`` (raw relevance, as the method returns it), and zennit's EpsilonPlusFlat
composite with its ResNetCanonizer. Target (issue 18): lrp_resnet <= 1.3x saliency; the
side-by-side table of that and the other speed ratios: ``python benchmarks/proxies.py``.
Run: ``python -m pytest benchmarks/bench_lrp.py --benchmark-only`` (about 5 minutes on 2 cores);
the ratios are printed at the end of the module.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from saliencybench.attributions.lrp import lrp
from saliencybench.core.registry import METHODS

_TIMES: dict[str, float] = {}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval().to(DEVICE)
    x = torch.randn(8, 3, 224, 224).to(DEVICE)
    t = torch.arange(8, device=DEVICE)
    yield model, x, t
    if {"saliency", "lrp_resnet"} <= set(_TIMES):
        print(f"\nlrp_resnet / saliency = {_TIMES['lrp_resnet'] / _TIMES['saliency']:.2f}x")
    if {"zennit", "lrp_resnet"} <= set(_TIMES):
        print(f"zennit EpsilonPlusFlat / lrp_resnet = {_TIMES['zennit'] / _TIMES['lrp_resnet']:.2f}x")
        print(f"zennit EpsilonPlusFlat / saliency = {_TIMES['zennit'] / _TIMES['saliency']:.2f}x")


def _saliency(model, x, t):
    xx = x.detach().requires_grad_(True)
    out = model(xx)[torch.arange(len(t)), t].sum()
    (g,) = torch.autograd.grad(out, xx)
    return g.abs()


def _lrp_resnet(model, x, t):
    return lrp(model, x, t, **METHODS.get("lrp_resnet").meta["defaults"])


def _zennit(model, x, t):
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    comp = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    with Gradient(model=model, composite=comp) as attributor:
        _, rel = attributor(x, torch.eye(1000, device=x.device)[t])
    return rel


def _synced(fn):
    def run(*args):
        out = fn(*args)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out
    return run


@pytest.mark.parametrize("name,fn", [("saliency", _saliency), ("lrp_resnet", _lrp_resnet), ("zennit", _zennit)])
def test_bench_resnet50_b8_224(benchmark, setup, name, fn):
    model, x, t = setup
    fn = _synced(fn)
    fn(model, x, t)  # warm-up (tracing, weight caches, cuDNN autotuning)
    out = benchmark.pedantic(fn, args=(model, x, t), rounds=3, iterations=1)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if benchmark.stats is not None:  # None under --benchmark-disable (a smoke run)
        _TIMES[name] = benchmark.stats.stats.median
