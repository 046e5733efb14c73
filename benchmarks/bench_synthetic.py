"""Generation speed of the embedded synthetic dataset and forward speed of the zoo models.

Run: python -m pytest benchmarks/bench_synthetic.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

from saliencybench.core.registry import MODELS
from saliencybench.datasets.synthetic import generate_range, synthetic


def test_generate_test_split(benchmark) -> None:
    """The whole 2000-image test split, as the factory builds it (images/s = 2000 / mean)."""
    ds = benchmark.pedantic(lambda: synthetic(split="test"), rounds=3, iterations=1)
    assert len(ds) == 2000


def test_generate_block_of_200(benchmark) -> None:
    pix, _, _ = benchmark(lambda: generate_range("val", 0, 200))
    assert pix.shape[0] == 200


@pytest.mark.parametrize("name", ["sb_resnet", "sb_vgg", "sb_nibvgg"])
def test_zoo_forward_64(benchmark, name: str) -> None:
    model = MODELS.get(name).obj(pretrained=False)
    x = torch.randn(64, 3, 64, 64)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    assert benchmark(run).shape == (64, 8)
