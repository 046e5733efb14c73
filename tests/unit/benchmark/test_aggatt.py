"""AggAtt bins (Rao et al. 2022 §3.2, supp. §H.4)."""

from __future__ import annotations

import pytest
import torch

from saliencybench.benchmark.report.aggatt import (
    DEFAULT_PERCENTILES,
    aggatt_bins,
    aggatt_normalise,
    aggatt_normaliser,
    bin_edges,
    bin_scores,
    plot_aggatt,
    sort_by_localization,
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
    from saliencybench.benchmark.report.aggatt import align_to_top_left
    from saliencybench.metrics.localization import localization_score
    from saliencybench.models.grid_settings import cell_masks

    maps = torch.rand(4, 1, 12, 12)
    masks = cell_masks((12, 12), 3)
    cells = [0, 4, 8, 5]
    moved = align_to_top_left(maps, cells, 3)
    torch.testing.assert_close(localization_score(moved, masks[[0, 0, 0, 0]]), localization_score(maps, masks[cells]))
    assert torch.equal(moved[1, :, :4, :4], maps[1, :, 4:8, 4:8])
    assert torch.equal(moved[0], maps[0])


def test_bins_average_the_positive_parts_of_signed_maps():
    """Rao et al. 2022 supp. §H.4: a bin's map is the mean of the maps' positive parts. Signed maps (IxG,
    IG) with opposite signs in one bin averaged to an empty bin before."""
    n = 100
    pattern = torch.zeros(1, 4, 4)
    pattern[0, :2, :2] = 1.0
    sign = torch.tensor([1.0, -1.0]).repeat(n // 2)
    maps = sign.view(n, 1, 1, 1) * pattern  # half +P, half -P
    means, ranges = aggatt_bins(maps, torch.zeros(n), torch.zeros(n))
    for b, (a, e) in enumerate(ranges):  # ties keep the input order: bins alternate signs
        torch.testing.assert_close(means[b], pattern * sign[a:e].clamp(min=0).mean())
    torch.testing.assert_close(means[0], pattern * 0.5)
    signed, _ = aggatt_bins(maps, torch.zeros(n), torch.zeros(n), positive=False)
    assert float(signed[0].abs().max()) == 0.0  # the signed mean of +P and -P is empty


def test_bins_of_ixg_and_ig_maps_are_positive_means():
    """Real signed maps (IxG, IG on a tiny grid model): every bin is the mean of positive parts."""
    from helpers.models import SmallRFNet
    from saliencybench.attributions.base import compute_attribution
    from saliencybench.metrics.localization import localization_parts
    from saliencybench.models.grid_settings import GridSetting, cell_masks

    torch.manual_seed(0)
    w = GridSetting(SmallRFNet().eval(), "gridpg", 2)
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cells = torch.arange(12) % 4
    target = cells * 5 + torch.arange(12) % 5
    masks = cell_masks((32, 32), 2)[cells]
    for method, params in (("ixg", {}), ("integrated_gradients", {"steps": 4})):
        maps = compute_attribution(method, w, x, target, params=params)
        assert float(maps.min()) < 0  # signed
        score, inside, _ = localization_parts(maps, masks)
        means, ranges = aggatt_bins(maps, score, inside)
        order = sort_by_localization(score, inside)
        for b, (a, e) in enumerate(ranges):
            torch.testing.assert_close(means[b], maps[order[a:e]].clamp(min=0).mean(0))
        assert float(means.min()) >= 0 and float(means.max()) > 0


def test_normaliser_is_the_995th_percentile_over_all_pixels_including_zeros():
    """One normaliser per method over every pixel of its bins, zeros included (Rao et al. 2022 code)."""
    means = torch.zeros(6, 1, 20, 20)  # 2400 pixels
    vals = torch.linspace(0.01, 1.0, 240)  # 10 % positive
    means.view(-1)[:240] = vals
    k = int(2400 * 0.995)  # sorted index 2388 -> the 228th positive value
    assert aggatt_normaliser(means) == pytest.approx(float(vals[k - 2160]))
    assert aggatt_normaliser(means) < float(torch.quantile(vals, 0.995))  # not positives only
    assert aggatt_normaliser(torch.zeros(6, 1, 4, 4)) == 1.0


def test_bin_median_positions():
    from saliencybench.benchmark.report.aggatt import bin_median_positions

    assert bin_median_positions([(0, 2), (2, 5), (5, 50), (7, 7)]) == [1, 3, 27, None]


def test_aggatt_figures_stay_small(tmp_path):
    """Committed figures: many methods of 128 x 128 maps stay well under 400 KB."""
    from saliencybench.benchmark.report.aggatt import plot_aggatt_examples

    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(40 * 6, 1, 16, 16, generator=g), size=(128, 128),
                                             mode="bilinear").view(40, 6, 1, 128, 128)
    rows = {f"method_{i}@input": smooth[i] for i in range(40)}
    p = plot_aggatt(rows, tmp_path / "agg.png", title="t", n=2)
    q = plot_aggatt_examples(rows, tmp_path / "ex.png", title="t", n=2)
    assert p.stat().st_size < 400_000 and q.stat().st_size < 400_000
