"""CPU proxies of the GPU overheads (issue 18), as pytest-benchmark groups; on CUDA when available.

- ``lrp-b1-64`` / ``lrp-b8-224``: ``lrp_resnet`` (through ``saliencybench.attribute``) against a
  bare input gradient, random-init ResNet50; ``extra_info["aten_ops"]`` is the number of aten
  operations of one call (goal: time <= 1.3x, ops <= 1.5x the gradient's);
- ``rise-256`` / ``engine-256``: RISE and the perturbation-curve engine against plain forward
  passes in batches of 256 (``extra_info["images"]``; goal: >= 0.95x the forward's images/s).

Run: ``python -m pytest benchmarks/bench_speed_proxies.py --benchmark-only --benchmark-group-by=group``.
The interleaved, side-by-side table of the same ratios: ``python benchmarks/proxies.py``.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from proxies import Options, aten_ops, input_gradient, plain_forward, resnet18_10, sync

import saliencybench as sb

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _timed(fn):
    def run():
        out = fn()
        sync(DEVICE)
        return out
    return run


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval().to(DEVICE)


@pytest.mark.parametrize("b,side", [(1, 64), (8, 224)], ids=["b1-64", "b8-224"])
@pytest.mark.parametrize("name", ["gradient", "lrp_resnet"])
def test_lrp_proxy(benchmark, resnet50, name, b, side):
    benchmark.group = f"lrp-b{b}-{side}"
    x = torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    t = torch.arange(b, device=DEVICE)
    fns = {"gradient": lambda: input_gradient(resnet50, x, t),
           "lrp_resnet": lambda: sb.attribute("lrp_resnet", resnet50, x, t)}
    benchmark.extra_info["aten_ops"] = aten_ops(fns[name])
    out = benchmark.pedantic(_timed(fns[name]), rounds=3 if side > 64 else 10, iterations=1, warmup_rounds=1)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["rise", "forward"])
def test_rise_proxy(benchmark, name):
    benchmark.group = "rise-256"
    opts = Options(device=DEVICE)
    model = resnet18_10(DEVICE)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    t = torch.arange(4, device=DEVICE)
    n = x.shape[0] * opts.rise_masks
    fn = (lambda: sb.attribute("rise", model, x, t, n_masks=opts.rise_masks)) if name == "rise" \
        else plain_forward(model, x, n, 256)
    benchmark.extra_info["images"] = n
    benchmark.pedantic(_timed(fn), rounds=3, iterations=1, warmup_rounds=1)
