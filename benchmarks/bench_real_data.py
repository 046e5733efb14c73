"""Decoding cost of real-dataset loading: threaded vs serial JPEG decode + ImageNet preprocessing.

Run: python -m pytest benchmarks/bench_real_data.py --benchmark-only -q
"""

from __future__ import annotations

import pytest

from helpers.real_data import write_image
from saliencybench.datasets.imagenet import eval_transform, load_images


@pytest.fixture(scope="module")
def jpeg_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    paths = []
    for i in range(48):
        p = root / f"img_{i:03d}.JPEG"
        write_image(p, (500, 375), seed=i)   # typical ImageNet val size
        paths.append(p)
    return paths


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_bench_load_images(benchmark, jpeg_paths, workers):
    tf = eval_transform(224)
    x = benchmark.pedantic(load_images, args=(jpeg_paths, tf, workers), rounds=3, iterations=1)
    assert x.shape == (48, 3, 224, 224)
