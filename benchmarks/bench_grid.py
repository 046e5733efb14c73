"""Cost of the grid settings relative to the plain model (Rao et al. 2022 supp. §F: DiFull /
DiPart cost about the same as GridPG), and of the localization metric.

Run: python -m pytest benchmarks/bench_grid.py --benchmark-only
Compare the ``gridpg`` / ``difull`` / ``dipart`` rows with ``plain_on_cells`` (the base model on
the same n*n cells as a batch): the ratio is the wrapper's overhead.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models.resnet import Bottleneck, ResNet

from saliencybench.metrics.localization import localization_parts
from saliencybench.models.grid_settings import GridSetting, cell_masks, grid_to_cells


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=8).eval()


@pytest.fixture(scope="module")
def grids():
    return torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def _input_gradient(m, x, target):
    x = x.clone().requires_grad_(True)
    m(x).gather(1, target[:, None]).sum().backward()
    return x.grad


@pytest.mark.parametrize("setting", ["gridpg", "difull", "dipart"])
def test_bench_setting_gradient(benchmark, model, grids, setting):
    w = GridSetting(model, setting, 2, cell_size=(64, 64))
    target = torch.arange(8) % 4 * 8
    benchmark.pedantic(_input_gradient, args=(w, grids, target), rounds=5, iterations=1)


def test_bench_plain_on_cells(benchmark, model, grids):
    cells = grid_to_cells(grids, 2)
    target = torch.zeros(cells.shape[0], dtype=torch.long)
    benchmark.pedantic(_input_gradient, args=(model, cells, target), rounds=5, iterations=1)


def test_bench_localization_metric(benchmark):
    maps = torch.randn(256, 1, 128, 128)
    masks = cell_masks((128, 128), 2)[torch.arange(256) % 4]
    benchmark(localization_parts, maps, masks)
