"""Real-dataset loaders on tiny fake trees in the official layouts (ImageNet, CUB, CIFAR)."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from helpers.real_data import make_fake_cifar, make_fake_cub, make_fake_image_folder, make_fake_imagenet, skip_md5
from saliencybench.core.errors import DataRootError, SetupError
from saliencybench.core.registry import DATASETS, MODELS
from saliencybench.core.types import IMAGENET_NORMALIZATION, SampleSet
from saliencybench.datasets import cub as cub_mod
from saliencybench.datasets.cifar import CIFAR_NORMALIZATION


def load(name: str, **kw) -> SampleSet:
    return DATASETS.get(name).obj(**kw)


# -- ImageNet (torchvision layout) ------------------------------------------------------------
@pytest.fixture
def imagenet_root(tmp_path):
    make_fake_imagenet(tmp_path / "imagenet", n_classes=3, per_class=3)
    return tmp_path / "imagenet"


def test_imagenet_loads_balanced_normalised_samples(imagenet_root):
    s = load("imagenet", root=imagenet_root, n_samples=6, image_size=32, num_workers=1)
    assert isinstance(s, SampleSet)
    assert s.x.shape == (6, 3, 32, 32) and s.x.dtype == torch.float32
    assert Counter(s.y.tolist()) == {0: 2, 1: 2, 2: 2}
    assert s.num_classes == 3 and s.class_names == ["class 0", "class 1", "class 2"]
    assert s.normalization == IMAGENET_NORMALIZATION
    pix = s.normalization.to_pixel(s.x)
    assert pix.min() >= -1e-5 and pix.max() <= 1 + 1e-5
    # sample ids name the wnid folder and file; labels agree with the folder
    wnids = s.info["wnids"]
    for sid, y in zip(s.sample_ids, s.y.tolist()):
        folder, stem = sid.split("/")
        assert folder == wnids[y] and stem.startswith("ILSVRC2012_val_")
    assert s.info["n_total"] == 9 and s.info["split"] == "val"


def test_imagenet_first_round_is_one_per_class_and_deterministic(imagenet_root):
    a = load("imagenet", root=imagenet_root, n_samples=3, image_size=16, num_workers=1)
    b = load("imagenet", root=imagenet_root, n_samples=3, image_size=16, num_workers=2)
    assert sorted(a.y.tolist()) == [0, 1, 2]
    assert a.sample_ids == b.sample_ids and torch.equal(a.x, b.x)
    picks = {tuple(load("imagenet", root=imagenet_root, n_samples=3, image_size=8, seed=s,
                        num_workers=1).sample_ids) for s in range(6)}
    assert len(picks) > 1  # the seed changes which image of each class is used


def test_imagenet_preprocessing_is_resize_then_center_crop(imagenet_root):
    from PIL import Image

    from saliencybench.datasets.imagenet import eval_transform

    # a 64x48 image whose left half is black, right half white: after resize(256)+crop(224)
    # the middle column stays at the boundary, so left pixels are black, right are white
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[:, 32:] = 255
    t = eval_transform(224)(Image.fromarray(arr))
    assert t.shape == (3, 224, 224) and t.dtype == torch.uint8
    assert t[:, :, :100].max() < 13 and t[:, :, -100:].min() > 242


def test_imagenet_root_from_environment(imagenet_root, monkeypatch):
    monkeypatch.setenv("SALIENCYBENCH_IMAGENET", str(imagenet_root))
    s = load("imagenet", n_samples=3, image_size=8, num_workers=1)
    assert len(s) == 3 and s.info["root"] == str(imagenet_root)


def test_imagenet_missing_root_says_where_and_how(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataRootError) as e:
        load("imagenet", root=missing, n_samples=1)
    msg = str(e.value)
    assert str(missing) in msg and "SALIENCYBENCH_IMAGENET" in msg and "image-net.org" in msg
    assert isinstance(e.value, SetupError)


def test_imagenet_without_meta_names_meta_bin_and_devkit(imagenet_root):
    (imagenet_root / "meta.bin").unlink()
    with pytest.raises(DataRootError) as e:
        load("imagenet", root=imagenet_root, n_samples=1)
    msg = str(e.value)
    assert "meta.bin" in msg and "ILSVRC2012_devkit_t12.tar.gz" in msg and str(imagenet_root) in msg
    assert "torchvision.datasets.ImageNet" in msg


def test_imagenet_without_val_folder_names_val_tar(imagenet_root):
    import shutil

    shutil.rmtree(imagenet_root / "val")
    with pytest.raises(DataRootError, match="ILSVRC2012_img_val.tar"):
        load("imagenet", root=imagenet_root, n_samples=1)


# -- plain class folders ------------------------------------------------------------------------
def test_imagenet_folder_sorted_classes_and_grayscale(tmp_path):
    make_fake_image_folder(tmp_path / "folder" / "val", classes=("emu", "cat", "dog"), per_class=3)
    s = load("imagenet_folder", root=tmp_path / "folder", n_samples=None, image_size=24, num_workers=1)
    assert s.class_names == ["cat", "dog", "emu"]
    assert s.x.shape == (9, 3, 24, 24)
    assert Counter(s.y.tolist()) == {0: 3, 1: 3, 2: 3}
    assert all(sid.split("/")[0] == s.class_names[y] for sid, y in zip(s.sample_ids, s.y.tolist()))
    # a grayscale file became 3 equal channels
    i = s.sample_ids.index("cat/img0")
    px = s.normalization.to_pixel(s.x[i:i + 1])[0]
    assert torch.allclose(px[0], px[1], atol=1e-5) and torch.allclose(px[1], px[2], atol=1e-5)


def test_imagenet_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataRootError, match="no class folders"):
        load("imagenet_folder", root=tmp_path / "empty")
    make_fake_image_folder(tmp_path / "tree", classes=("a",), per_class=1)
    (tmp_path / "tree" / "b").mkdir()
    with pytest.raises(DataRootError, match="contain no images: b"):
        load("imagenet_folder", root=tmp_path / "tree")


# -- CUB ----------------------------------------------------------------------------------------
def _official_like_lists():
    """11,788 synthetic entries: 200 classes, 5,994 official train / 5,794 official test."""
    labels, is_train = [], []
    for c in range(200):
        n_train = 30 if c >= 6 else 29      # 194*30 + 6*29 = 5994
        n_test = 29 if c >= 6 else 28       # 194*29 + 6*28 = 5794
        labels += [c] * (n_train + n_test)
        is_train += [True] * n_train + [False] * n_test
    return labels, is_train


def test_cub_split_arithmetic_on_11788_entries():
    labels, is_train = _official_like_lists()
    assert len(labels) == 11788 and sum(is_train) == 5994
    s = cub_mod.split_indices(labels, is_train)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (5394, 600, 5794)
    assert not set(s["train"]) & set(s["val"]) and not set(s["val"]) & set(s["test"])
    assert set(s["train"]) | set(s["val"]) == {i for i, t in enumerate(is_train) if t}
    assert Counter(labels[i] for i in s["val"]) == {c: 3 for c in range(200)}  # class-stratified
    assert s == cub_mod.split_indices(labels, is_train)                          # deterministic
    assert s["val"] != cub_mod.split_indices(labels, is_train, split_seed=1)["val"]


def test_cub_loads_test_split_with_segmentation_masks(tmp_path):
    make_fake_cub(tmp_path / "cub", n_classes=4, train_per_class=5, test_per_class=3)
    s = load("cub", root=tmp_path / "cub", n_samples=None, image_size=40, val_size=4, num_workers=1)
    assert s.x.shape == (12, 3, 40, 40) and s.num_classes == 4
    assert Counter(s.y.tolist()) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert s.mask is not None and s.mask.shape == (12, 1, 40, 40)
    assert set(s.mask.unique().tolist()) <= {0.0, 1.0}
    assert s.info["mask_sources"] == {"segmentation": 12}
    assert s.info["split_sizes"] == {"train": 16, "val": 4, "test": 12}
    assert s.class_names[0] == "001.Bird_1"
    # the fake segmentation is the bounding box: both masks agree (IoU > 0.8)
    b = load("cub", root=tmp_path / "cub", n_samples=None, image_size=40, val_size=4, mask="bbox",
             num_workers=1)
    assert b.sample_ids == s.sample_ids and b.info["mask_sources"] == {"bbox": 12}
    inter = (s.mask * b.mask).sum((1, 2, 3))
    union = ((s.mask + b.mask) > 0).float().sum((1, 2, 3))
    assert bool((inter / union > 0.8).all())


def test_cub_splits_are_disjoint_and_root_may_be_the_cub_folder(tmp_path):
    cub_dir = make_fake_cub(tmp_path / "cub", n_classes=4, train_per_class=5, test_per_class=3,
                            segmentations=False)
    ids = {sp: set(load("cub", root=cub_dir, split=sp, n_samples=None, image_size=16, val_size=8,
                        num_workers=1).sample_ids) for sp in ("train", "val", "test")}
    assert [len(ids[k]) for k in ("train", "val", "test")] == [12, 8, 12]
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    s = load("cub", root=cub_dir, split="val", n_samples=4, image_size=16, val_size=8, num_workers=1)
    assert Counter(s.y.tolist()) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert s.info["mask_sources"] == {"bbox": 4}          # no segmentations: boxes


def test_cub_box_mask_scales_with_resize():
    m = cub_mod.box_mask((10.0, 20.0, 30.0, 10.0), (100, 50), (50, 50))
    ys, xs = torch.nonzero(m[0], as_tuple=True)
    assert (xs.min().item(), xs.max().item()) == (5, 19)
    assert (ys.min().item(), ys.max().item()) == (20, 29)


def _pil_expected(path, size_wh, box_lt, s):
    """Independent expectation: PIL bilinear resize to ``size_wh``, crop at ``box_lt``, S x S."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize(size_wh, Image.Resampling.BILINEAR)
        im = im.crop((box_lt[0], box_lt[1], box_lt[0] + s, box_lt[1] + s))
    pix = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div(255.0)
    return IMAGENET_NORMALIZATION.from_pixel(pix[None])[0]


def test_cub_test_transform_is_resize_then_center_crop(tmp_path):
    # Otsuki et al. 2024 official test transform: Resize(int(S / 0.875)) (256 for 224) on the
    # shorter side, CenterCrop(S). Fake images are 50 x 40 (W x H): with S = 40 the shorter side
    # becomes int(40 / 0.875) = 45, the longer int(45 * 50 / 40) = 56; the crop starts at
    # (round(16 / 2), round(5 / 2)) = (8, 2).
    assert cub_mod.crop_box((500, 375), 224) == ((341, 256), (58, 16))
    assert cub_mod.crop_box((50, 40), 40) == ((56, 45), (8, 2))
    cub_dir = make_fake_cub(tmp_path / "cub", n_classes=2, train_per_class=1, test_per_class=2)
    s = load("cub", root=tmp_path / "cub", n_samples=None, image_size=40, val_size=2, num_workers=1)
    assert s.x.shape == (4, 3, 40, 40) and s.info["resize"] == "center_crop"
    path = cub_dir / "images" / (s.sample_ids[0] + ".jpg")
    assert torch.allclose(s.x[0], _pil_expected(path, (56, 45), (8, 2), 40), atol=1e-5)
    # the old whole-image resize stays available as resize="square"
    sq = load("cub", root=tmp_path / "cub", n_samples=None, image_size=40, val_size=2, num_workers=1,
              resize="square")
    assert torch.allclose(sq.x[0], _pil_expected(path, (40, 40), (0, 0), 40), atol=1e-5)
    assert not torch.allclose(sq.x[0], s.x[0], atol=1e-3)
    # masks follow the crop: the fake segmentation is the box, so both masks agree
    b = load("cub", root=tmp_path / "cub", n_samples=None, image_size=40, val_size=2, mask="bbox",
             num_workers=1)
    inter = (s.mask * b.mask).sum((1, 2, 3))
    union = ((s.mask + b.mask) > 0).float().sum((1, 2, 3))
    assert bool((inter / union > 0.85).all())
    with pytest.raises(ValueError, match="resize must be one of center_crop, square"):
        load("cub", root=tmp_path / "cub", n_samples=None, image_size=40, val_size=2, resize="crop")


def test_cub_errors_name_the_missing_file(tmp_path):
    cub_dir = make_fake_cub(tmp_path / "cub", n_classes=2, train_per_class=2, test_per_class=1,
                            segmentations=False)
    with pytest.raises(DataRootError, match="segmentations.tgz"):
        load("cub", root=tmp_path / "cub", mask="segmentation", val_size=2)
    (cub_dir / "bounding_boxes.txt").unlink()
    with pytest.raises(DataRootError) as e:
        load("cub", root=tmp_path / "cub", val_size=2)
    assert "bounding_boxes.txt" in str(e.value) and "CUB_200_2011.tgz" in str(e.value)
    with pytest.raises(DataRootError, match="CUB_200_2011/images.txt"):
        load("cub", root=tmp_path)


def test_cub_malformed_line_is_reported(tmp_path):
    cub_dir = make_fake_cub(tmp_path / "cub", n_classes=2, train_per_class=2, test_per_class=1,
                            segmentations=False)
    (cub_dir / "train_test_split.txt").write_text("1 1\nnot-a-number 0\n")
    with pytest.raises(DataRootError, match="train_test_split.txt line 2"):
        load("cub", root=cub_dir, val_size=1)


# -- CIFAR ----------------------------------------------------------------------------------------
def test_cifar10_values_follow_paper_004_normalisation(tmp_path, monkeypatch):
    skip_md5(monkeypatch)
    make_fake_cifar(tmp_path, "cifar10", n_per_file=20)
    s = load("cifar10", root=tmp_path, n_samples=10, split="test")
    assert s.x.shape == (10, 3, 32, 32) and Counter(s.y.tolist()) == {c: 1 for c in range(10)}
    assert s.normalization == CIFAR_NORMALIZATION
    assert CIFAR_NORMALIZATION.mean == (0.507, 0.487, 0.441)
    assert CIFAR_NORMALIZATION.std == (0.267, 0.256, 0.276)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="latin1")
    i = int(s.sample_ids[0].split("-")[1])
    pixels = torch.from_numpy(raw["data"][i].reshape(3, 32, 32)).float() / 255
    mean = torch.tensor(CIFAR_NORMALIZATION.mean).view(3, 1, 1)
    std = torch.tensor(CIFAR_NORMALIZATION.std).view(3, 1, 1)
    assert torch.allclose(s.x[0], (pixels - mean) / std, atol=1e-5)
    assert s.y[0].item() == raw["labels"][i]
    assert s.class_names[:2] == ["class_0", "class_1"]


def test_cifar_train_split_resize_and_cifar100(tmp_path, monkeypatch):
    skip_md5(monkeypatch)
    make_fake_cifar(tmp_path, "cifar10", n_per_file=20)
    make_fake_cifar(tmp_path, "cifar100", n_per_file=2)
    tr = load("cifar10", root=tmp_path, split="train", n_samples=None, image_size=48)
    assert tr.x.shape == (100, 3, 48, 48) and tr.sample_ids[0].startswith("train-")
    c100 = load("cifar100", root=tmp_path, n_samples=200)
    assert c100.num_classes == 100 and Counter(c100.y.tolist()) == {c: 2 for c in range(100)}
    a = load("cifar10", root=tmp_path, n_samples=5, seed=3)
    b = load("cifar10", root=tmp_path, n_samples=5, seed=3)
    assert a.sample_ids == b.sample_ids


def test_cifar_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataRootError) as e:
        load("cifar10", root=tmp_path)
    msg = str(e.value)
    assert "cifar-10-batches-py/data_batch_1" in msg and "download=True" in msg and "cifar-10-python.tar.gz" in msg
    make_fake_cifar(tmp_path, "cifar10", n_per_file=2)
    # the files exist but are not the official ones: torchvision's md5 check fails
    with pytest.raises(DataRootError, match="corrupted"):
        load("cifar10", root=tmp_path)


# -- a loaded batch through registry models ---------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
def test_registry_model_forwards_a_loaded_imagenet_batch(imagenet_root, arch):
    s = load("imagenet", root=imagenet_root, n_samples=3, image_size=64, num_workers=1)
    torch.manual_seed(0)
    model = MODELS.get(arch).obj(weights=None)
    batch = s.get([0, 1, 2])
    with torch.no_grad():
        out = model(batch.x)
    assert out.shape == (3, 1000) and torch.isfinite(out).all()
    assert not model.training
