"""AggAtt bins (Rao et al. 2022 §3.2, supp. §H.4)."""

from __future__ import annotations

import pytest
import torch

from saliencybench.metrics.aggatt import (
    DEFAULT_PERCENTILES, aggatt_bins, aggatt_normalise, aggatt_normaliser, bin_edges, bin_scores,
    plot_aggatt, sort_by_localization,
)


def test_bin_edges_follow_percentiles():
    assert bin_edges(1000) == [0, 20, 50, 500, 950, 980, 1000]
    assert bin_edges(100) == [0, 2, 5, 50, 95, 98, 100]
    e = bin_edges(10)  # small N: every bin keeps at least one map
    assert e[0] == 0 and e[-1] == 10 and all(b > a for a, b in zip(e, e[1:]))
    assert bin_edges(3)[-1] == 3
    with pytest.raises(ValueError):
        bin_edges(10, [0, 50, 40, 100])


def test_sort_descending_with_ties_broken_by_inside_mass():
    scores = torch.tensor([0.5, 1.0, 1.0, 0.2, 1.0])
    inside = torch.tensor([9.0, 1.0, 3.0, 5.0, 2.0])
    assert sort_by_localization(scores, inside).tolist() == [2, 4, 1, 0, 3]


def test_bin_means_are_means_of_sorted_maps():
    n = 100
    scores = torch.linspace(0, 1, n)  # ascending, so bins run from the end
    maps = scores.view(n, 1, 1, 1).expand(n, 1, 3, 3).clone()
    inside = torch.zeros(n)
    means, ranges = aggatt_bins(maps, scores, inside, DEFAULT_PERCENTILES)
    assert means.shape == (6, 1, 3, 3)
    assert ranges == [(0, 2), (2, 5), (5, 50), (50, 95), (95, 98), (98, 100)]
    desc = scores.flip(0)
    for b, (a, e) in enumerate(ranges):
        torch.testing.assert_close(means[b, 0, 0, 0], desc[a:e].mean())
    info = bin_scores(scores, inside, ranges)
    assert [i["n_maps"] for i in info] == [2, 3, 45, 45, 3, 2]
    assert info[0]["min_localization"] >= info[1]["max_localization"]


def test_one_normaliser_per_method_keeps_relative_strength():
    means = torch.zeros(6, 1, 20, 20)
    means[0] = 1.0
    means[5] = 0.25
    norm = aggatt_normalise(means)
    assert aggatt_normaliser(means) == pytest.approx(1.0)
    assert float(norm[0].max()) == 1.0 and float(norm[5].max()) == pytest.approx(0.25)
    assert float(aggatt_normalise(-means).abs().max()) == 0.0  # no positive mass: stays zero


def test_plot_aggatt_writes_png(tmp_path):
    rows = {"a": torch.rand(6, 1, 8, 8), "b": torch.rand(6, 1, 8, 8)}
    p = plot_aggatt(rows, tmp_path / "agg.png", title="t", n=2)
    assert p.is_file() and p.stat().st_size > 1000


def test_align_to_top_left_is_a_cell_permutation():
    from saliencybench.metrics.localization import align_to_top_left, localization_score
    from saliencybench.models.grid_settings import cell_masks

    maps = torch.rand(4, 1, 12, 12)
    masks = cell_masks((12, 12), 3)
    cells = [0, 4, 8, 5]
    moved = align_to_top_left(maps, cells, 3)
    torch.testing.assert_close(localization_score(moved, masks[[0, 0, 0, 0]]), localization_score(maps, masks[cells]))
    assert torch.equal(moved[1, :, :4, :4], maps[1, :, 4:8, 4:8])
    assert torch.equal(moved[0], maps[0])
