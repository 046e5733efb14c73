"""Test-local toy registrations: a dataset, a model, methods and metrics that need nothing else.

Used by the runner / CLI / reliability tests so they exercise the pipeline with known answers
and without the zoo checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from saliencybench.core.registry import (
    DATASETS,
    METHODS,
    register_dataset,
    register_method,
    register_metric,
    register_model,
)
from saliencybench.core.types import MetricOutput, Normalization, SampleSet
from saliencybench.metrics.base import Metric

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        self.sb_layers = {"input": None, "middle": "conv", "final": "conv", "cam": "conv"}

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


def toy_dataset(*, n_samples=None, seed=0, split="test", **kw) -> SampleSet:
    g = torch.Generator().manual_seed(123)
    n = 24
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.arange(n) % 3
    mask = torch.zeros(n, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    ids = [f"toy-{i:03d}" for i in range(n)]
    ss = SampleSet(x, y, normalization=NORM, num_classes=3, sample_ids=ids, mask=mask, name="toy")
    if n_samples is not None:
        ss = ss.subset(list(range(min(n, n_samples))))
    return ss


def grad_x_input(model, x, target, **kw):
    x = x.clone().requires_grad_(True)
    out = model(x).gather(1, target[:, None]).sum()
    (g,) = torch.autograd.grad(out, x)
    return g * x


def noisy(model, x, target, seeds, **kw):
    from saliencybench.core.seeding import per_sample_rand
    return per_sample_rand(seeds, x.shape[1:], x.device)


def nan_method(model, x, target, **kw):
    a = torch.ones_like(x)
    a[0] = float("nan")
    return a


def broken_method(model, x, target, **kw):
    raise RuntimeError("this method always fails")


class MeanMap(Metric):
    """Mean of the attribution map (a metric with a known answer)."""

    def evaluate(self, ctx, attribution):
        return MetricOutput(values=attribution.flatten(1).mean(1))


class ForwardCurve(Metric):
    """Softmax of the target after scaling the input by t in {0, .5, 1}: a tiny curve metric."""

    def evaluate(self, ctx, attribution):
        ts = torch.tensor([0.0, 0.5, 1.0], device=ctx.device)
        with torch.no_grad():
            xs = torch.cat([ctx.batch.x * t for t in ts])
            p = ctx.model(xs).softmax(1)
        ctx.count_forwards(self.name, xs.shape[0])
        b = ctx.batch.x.shape[0]
        p = p.view(3, b, -1).gather(2, ctx.target.view(1, b, 1).expand(3, b, 1))[..., 0].T
        return MetricOutput(values=p.mean(1), curve=p, curve_x=ts)


def register_all() -> None:
    if "toy" in DATASETS:
        return
    register_dataset("toy", description="test toy data")(toy_dataset)
    register_model("toy_net", dataset="toy")(lambda **kw: ToyNet().eval())
    register_method("toy_gxi", family="gradient")(grad_x_input)
    register_method("toy_noise", family="baseline", stochastic=True)(noisy)
    register_method("toy_nan", family="baseline")(nan_method)
    register_method("toy_broken", family="baseline")(broken_method)
    register_metric("toy_mean", higher_is_better=True)(MeanMap)
    register_metric("toy_curve", higher_is_better=True)(ForwardCurve)


TOY_TOML = """
[suite]
name = "toy"
datasets = ["toy"]
models = ["toy_net"]
methods = ["toy_gxi", "toy_noise"]
metrics = ["toy_mean", "toy_curve"]
n_samples = 12
batch_size = 4
chunk_size = 8
seed = 0
device = "cpu"
figures = false
"""


def na_method(model, x, target, **kw):
    from saliencybench.core.errors import NotApplicableError
    raise NotApplicableError("toy_na applies to no model")


if "toy_na" not in METHODS:
    register_method("toy_na", family="baseline")(na_method)


def wrong_shape(model, x, target, **kw):
    return torch.ones(x.shape[0], 1, 5, 5, 5)


def wrong_batch(model, x, target, **kw):
    return torch.ones(x.shape[0] + 1, 1, 16, 16)


if "toy_wrong_shape" not in METHODS:
    register_method("toy_wrong_shape", family="baseline")(wrong_shape)
    register_method("toy_wrong_batch", family="baseline")(wrong_batch)
