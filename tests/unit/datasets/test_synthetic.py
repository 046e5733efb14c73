"""The embedded synthetic dataset: determinism, shapes, masks, class-balanced selection."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from saliencybench.core.registry import DATASETS
from saliencybench.core.types import SampleSet
from saliencybench.datasets.synthetic import (
    BLOCK,
    CLASS_NAMES,
    NUM_CLASSES,
    SYNTHETIC_NORMALIZATION,
    generate_range,
    render_block,
    synthetic,
)


@pytest.fixture(scope="module")
def small_test() -> SampleSet:
    return synthetic(split="test", split_size=BLOCK)


def test_registered_with_metadata() -> None:
    entry = DATASETS.get("synthetic")
    assert entry.obj is synthetic
    assert entry.meta["num_classes"] == NUM_CLASSES == 8
    assert entry.meta["has_mask"] is True


def test_shapes_dtypes_and_ids(small_test: SampleSet) -> None:
    ds = small_test
    assert ds.x.shape == (BLOCK, 3, 64, 64) and ds.x.dtype == torch.float32
    assert ds.y.shape == (BLOCK,) and ds.y.dtype == torch.long
    assert ds.mask is not None and ds.mask.shape == (BLOCK, 1, 64, 64)
    assert set(ds.mask.unique().tolist()) <= {0.0, 1.0}
    assert ds.num_classes == 8 and ds.class_names == list(CLASS_NAMES)
    assert ds.normalization == SYNTHETIC_NORMALIZATION
    assert all(s.startswith("test-") and len(s) == len("test-000123") for s in ds.sample_ids)
    assert len(set(ds.sample_ids)) == BLOCK
    pixels = ds.normalization.to_pixel(ds.x)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert torch.isfinite(ds.x).all()


def test_same_seed_identical_and_other_split_or_seed_differs() -> None:
    a = generate_range("test", 0, 40)
    b = generate_range("test", 0, 40)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    for other in (generate_range("val", 0, 40), generate_range("train", 0, 40), generate_range("test", 0, 40, seed=1)):
        assert not torch.equal(a[0], other[0])


def test_ranges_do_not_depend_on_chunking() -> None:
    whole = generate_range("val", BLOCK - 10, BLOCK + 10)
    left = generate_range("val", BLOCK - 10, BLOCK)
    right = generate_range("val", BLOCK, BLOCK + 10)
    assert torch.equal(whole[0], torch.cat([left[0], right[0]]))
    assert torch.equal(whole[1], torch.cat([left[1], right[1]]))
    ds = synthetic(split="val", split_size=BLOCK + 10)
    i = ds.sample_ids.index(f"val-{BLOCK + 3:06d}")
    assert torch.allclose(ds.x[i : i + 1], SYNTHETIC_NORMALIZATION.from_pixel(whole[0][13:14]), atol=1e-6)


def test_masks_mark_the_object(small_test: SampleSet) -> None:
    mask = small_test.mask[:, 0].bool()
    area = mask.flatten(1).sum(1)
    assert (area > 50).all(), "every object covers a visible area"
    # Object strictly inside the image: the border rows / columns are background.
    assert not mask[:, 0, :].any() and not mask[:, -1, :].any()
    assert not mask[:, :, 0].any() and not mask[:, :, -1].any()
    # The object is painted in the palette opposite to the background's luminance band:
    # mean |pixel - background colour| is large inside the mask.
    pixels = small_test.normalization.to_pixel(small_test.x)
    m = mask.unsqueeze(1).float()
    ring = (torch.nn.functional.max_pool2d(m, 9, 1, 4) - m)  # pixels just outside the object
    inside = (pixels * m).flatten(2).sum(-1) / m.flatten(2).sum(-1)
    near = (pixels * ring).flatten(2).sum(-1) / ring.flatten(2).sum(-1).clamp_min(1)
    assert ((inside - near).abs().mean(1) > 0.15).float().mean() > 0.9


def test_render_block_is_class_balanced_and_labels_drive_shape() -> None:
    g = torch.Generator().manual_seed(3)
    pix, y, mask = render_block(80, g, size=64)
    assert Counter(y.tolist()) == {c: 10 for c in range(8)}
    # Shape statistics differ by class: rings / frames are hollow (small fill ratio of bbox).
    fill = []
    for i in range(80):
        rows, cols = mask[i, 0].any(1).nonzero(), mask[i, 0].any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fill.append(float(mask[i, 0].sum()) / float(box))
    fill_t = torch.tensor(fill)
    assert fill_t[y == CLASS_NAMES.index("ring")].mean() < fill_t[y == CLASS_NAMES.index("disk")].mean()


def test_other_sizes_scale() -> None:
    ds = synthetic(split="test", split_size=16, size=32)
    assert ds.x.shape == (16, 3, 32, 32) and ds.mask.shape == (16, 1, 32, 32)
    assert (ds.mask.flatten(1).sum(1) > 10).all()


def test_n_samples_is_class_balanced_and_deterministic() -> None:
    a = synthetic(split="test", n_samples=24, split_size=BLOCK)
    b = synthetic(split="test", n_samples=24, split_size=BLOCK)
    assert a.sample_ids == b.sample_ids and torch.equal(a.x, b.x)
    assert Counter(a.y.tolist()) == {c: 3 for c in range(8)}
    # A prefix of a larger balanced selection is the smaller selection.
    c = synthetic(split="test", n_samples=40, split_size=BLOCK)
    assert c.sample_ids[:24] == a.sample_ids


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        synthetic(split="dev")
    with pytest.raises(TypeError, match="unexpected"):
        synthetic(split="test", n_sample=3)
