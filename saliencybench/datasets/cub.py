"""Caltech-UCSD Birds-200-2011 (CUB) from its official files, with object masks.

Layout (as unpacked from CUB_200_2011.tgz, and segmentations.tgz next to it)::

    ROOT/CUB_200_2011/images.txt              "<image_id> <class_dir>/<file>.jpg"
    ROOT/CUB_200_2011/image_class_labels.txt  "<image_id> <class_id 1..200>"
    ROOT/CUB_200_2011/train_test_split.txt    "<image_id> <1 = train, 0 = test>"
    ROOT/CUB_200_2011/bounding_boxes.txt      "<image_id> <x> <y> <width> <height>"
    ROOT/CUB_200_2011/classes.txt             "<class_id> <class name>"   (optional)
    ROOT/CUB_200_2011/images/<class_dir>/<file>.jpg
    ROOT/segmentations/<class_dir>/<file>.png  (or ROOT/CUB_200_2011/segmentations/; optional)

``ROOT`` may also be the ``CUB_200_2011`` folder itself.

Split (Otsuki et al. 2024, supplement A): the official test split (5,794 images) is the
test set; the official training split (5,994) is divided into 5,394 training and 600
validation images. The validation images are drawn class-stratified and deterministically
(round-robin over classes of a seeded permutation, i.e. 3 per class for the 200 classes),
so every user gets the same three lists.

Test-time preprocessing (``resize="center_crop"``, the default) is the official code's test
transform of Otsuki et al. 2024 (github.com/keio-smilab24/LRP-for-ResNet, ``data/__init__.py``):
the shorter side resized to ``int(S / 0.875)`` (256 for S = 224, bilinear) and a central
S x S crop. ``resize="square"`` resizes the whole image to S x S without a crop (supplement A:
"resized to a uniform dimension of 224 x 224 pixels"). Images are normalised with the
ImageNet statistics of the ImageNet-pretrained ResNet50; masks follow the same geometry.
``SampleSet.mask`` holds the binarised segmentation (threshold 0.5) or, where no
segmentation is present, the bounding box.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from saliencybench.core.errors import DataRootError
from saliencybench.core.registry import register_dataset
from saliencybench.core.types import IMAGENET_NORMALIZATION, SampleSet
from saliencybench.datasets.imagenet import _warn_unused, open_rgb
from saliencybench.datasets.roots import require_dir, resolve_root
from saliencybench.datasets.sampling import class_balanced_indices

ENV_VAR = "SALIENCYBENCH_CUB"
OFFICIAL_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")
VAL_SIZE = 600
SPLITS = ("train", "val", "test", "trainval", "all")
_FIX = ("download CUB_200_2011.tgz (and segmentations.tgz for masks) from "
        "https://www.vision.caltech.edu/datasets/cub_200_2011/ and unpack them into ROOT: "
        "tar -xzf CUB_200_2011.tgz -C ROOT && tar -xzf segmentations.tgz -C ROOT")


@dataclass(frozen=True)
class CUBMetadata:
    """The official annotation files of CUB-200-2011, parsed; index i is image id ``ids[i]``."""

    cub_dir: Path
    ids: list[int]
    relpaths: list[str]          # relative to cub_dir / "images"
    labels: list[int]            # 0-based class index
    is_train: list[bool]         # official split
    boxes: list[tuple[float, float, float, float]]   # x, y, width, height in original pixels
    class_names: list[str]
    segmentation_dir: Path | None

    def image_path(self, i: int) -> Path:
        return self.cub_dir / "images" / self.relpaths[i]

    def segmentation_path(self, i: int) -> Path | None:
        if self.segmentation_dir is None:
            return None
        return self.segmentation_dir / (os.path.splitext(self.relpaths[i])[0] + ".png")


def find_cub_dir(root: Path) -> Path:
    """The folder that holds ``images.txt``: ``root/CUB_200_2011`` or ``root`` itself."""
    require_dir("cub", root, ENV_VAR, _FIX)
    for cand in (root / "CUB_200_2011", root):
        if (cand / "images.txt").is_file():
            return cand
    raise DataRootError("cub", root, "CUB-200-2011 annotation files not found",
                        expected=["CUB_200_2011/images.txt", "images.txt"], fix=_FIX)


def _read_table(path: Path, n_fields: int) -> dict[int, list[str]]:
    rows: dict[int, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=n_fields - 1) if n_fields == 2 else line.split()
            if len(parts) != n_fields:
                raise DataRootError(
                    "cub", path.parent, f"{path.name} line {lineno} is malformed: {line!r} "
                    f"(expected {n_fields} fields)", fix=_FIX)
            try:
                rows[int(parts[0])] = parts[1:]
            except ValueError:
                raise DataRootError("cub", path.parent,
                                    f"{path.name} line {lineno} does not start with an id: {line!r}",
                                    fix=_FIX) from None
    return rows


def read_metadata(cub_dir: Path) -> CUBMetadata:
    """Parse the official text files; raise :class:`DataRootError` naming what is missing."""
    missing = [f for f in OFFICIAL_FILES if not (cub_dir / f).is_file()]
    if missing:
        raise DataRootError("cub", cub_dir, "official annotation files missing",
                            expected=missing, fix=_FIX)
    images = _read_table(cub_dir / "images.txt", 2)
    labels = _read_table(cub_dir / "image_class_labels.txt", 2)
    split = _read_table(cub_dir / "train_test_split.txt", 2)
    boxes = _read_table(cub_dir / "bounding_boxes.txt", 5)
    ids = sorted(images)
    for fname, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split),
                         ("bounding_boxes.txt", boxes)):
        absent = [i for i in ids if i not in table]
        if absent:
            raise DataRootError("cub", cub_dir, f"{fname} has no entry for image id(s) "
                                f"{', '.join(map(str, absent[:5]))}", fix=_FIX)
    class_ids = sorted({int(labels[i][0]) for i in ids})
    names: dict[int, str] = {}
    if (cub_dir / "classes.txt").is_file():
        names = {k: v[0] for k, v in _read_table(cub_dir / "classes.txt", 2).items()}
    n_classes = max(class_ids)
    seg_dir = next((d for d in (cub_dir / "segmentations", cub_dir.parent / "segmentations")
                    if d.is_dir()), None)
    return CUBMetadata(
        cub_dir=cub_dir,
        ids=ids,
        relpaths=[images[i][0] for i in ids],
        labels=[int(labels[i][0]) - 1 for i in ids],
        is_train=[split[i][0].strip() == "1" for i in ids],
        boxes=[tuple(float(v) for v in boxes[i]) for i in ids],  # type: ignore[misc]
        class_names=[names.get(c, f"{c:03d}") for c in range(1, n_classes + 1)],
        segmentation_dir=seg_dir,
    )


def split_indices(labels: Sequence[int], is_train: Sequence[bool], *, val_size: int = VAL_SIZE,
                  split_seed: int = 0) -> dict[str, list[int]]:
    """Indices of the train / val / test split of Otsuki et al. 2024 (supplement A).

    ``test`` = official test images; ``val`` = ``val_size`` official training images chosen
    class-stratified (round-robin over classes, seeded); ``train`` = the other official
    training images. Each list is sorted. With the official files: 5394 / 600 / 5794.
    """
    train_official = [i for i, t in enumerate(is_train) if t]
    test = [i for i, t in enumerate(is_train) if not t]
    if val_size > len(train_official):
        raise ValueError(f"val_size={val_size} exceeds the {len(train_official)} training images")
    picked = class_balanced_indices([labels[i] for i in train_official], val_size, seed=split_seed)
    val = sorted(train_official[j] for j in picked)
    val_set = set(val)
    train = [i for i in train_official if i not in val_set]
    return {"train": train, "val": val, "test": test, "trainval": sorted(train_official),
            "all": list(range(len(labels)))}


def box_mask(box: tuple[float, float, float, float], orig_size: tuple[int, int],
             out_size: tuple[int, int]) -> Tensor:
    """(1, H, W) uint8 0/1 mask of a CUB box ``(x, y, w, h)`` after resizing ``orig_size=(W0, H0)``."""
    x, y, w, h = box
    w0, h0 = orig_size
    out_h, out_w = out_size
    sx, sy = out_w / float(w0), out_h / float(h0)
    x0, x1 = math.floor(x * sx), math.ceil((x + w) * sx)
    y0, y1 = math.floor(y * sy), math.ceil((y + h) * sy)
    m = torch.zeros(1, out_h, out_w, dtype=torch.uint8)
    m[:, max(0, y0):min(out_h, y1), max(0, x0):min(out_w, x1)] = 1
    return m


RESIZES = ("center_crop", "square")


def _geometry(image_size: int, resize: str) -> Callable[[Any], Any]:
    """PIL -> PIL resize (and crop) of ``resize`` mode (module doc), bilinear."""
    from torchvision import transforms as T

    bilinear = T.InterpolationMode.BILINEAR
    if resize == "square":
        return T.Resize((image_size, image_size), interpolation=bilinear, antialias=True)
    if resize == "center_crop":
        return T.Compose([T.Resize(int(image_size / 0.875), interpolation=bilinear, antialias=True),
                          T.CenterCrop(image_size)])
    raise ValueError(f"cub: resize must be one of {', '.join(RESIZES)}, got {resize!r}")


def image_transform(image_size: int = 224, resize: str = "center_crop") -> Callable[[Any], Tensor]:
    """PIL image -> (3, S, S) uint8: ``center_crop`` = Resize(int(S / 0.875)) + CenterCrop(S),
    the official test transform of Otsuki et al. 2024; ``square`` = S x S without a crop."""
    from torchvision import transforms as T

    return T.Compose([_geometry(image_size, resize), T.PILToTensor()])


def crop_box(orig_size: tuple[int, int], image_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((W1, H1), (left, top))``: the size after torchvision's ``Resize(int(S / 0.875))`` of
    an image of ``orig_size = (W0, H0)`` and the offset of its central S x S crop."""
    w0, h0 = orig_size
    short = int(image_size / 0.875)
    if w0 <= h0:
        w1, h1 = short, int(short * h0 / w0)
    else:
        w1, h1 = int(short * w0 / h0), short
    return (w1, h1), (int(round((w1 - image_size) / 2.0)), int(round((h1 - image_size) / 2.0)))


def box_mask_cropped(box: tuple[float, float, float, float], orig_size: tuple[int, int],
                     image_size: int) -> Tensor:
    """(1, S, S) uint8 0/1 mask of a CUB box ``(x, y, w, h)`` after ``resize="center_crop"``."""
    (w1, h1), (left, top) = crop_box(orig_size, image_size)
    full = box_mask(box, orig_size, (h1, w1))
    return full[:, top:top + image_size, left:left + image_size].contiguous()


def _load_segmentation(path: Path, image_size: int, resize: str = "center_crop") -> Tensor:
    """(1, S, S) uint8 0/1 mask: the segmentation resized (and cropped) as the image,
    bilinearly, thresholded at 0.5."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        seg = _geometry(image_size, resize)(im.convert("L"))
    return torch.from_numpy(np.asarray(seg) >= 128).to(torch.uint8).unsqueeze(0)


class CUBImages(torch.utils.data.Dataset):
    """(image, label) pairs of one CUB split, for training (``transform`` maps PIL -> tensor)."""

    def __init__(self, meta: CUBMetadata, indices: Sequence[int],
                 transform: Callable[[Any], Tensor]) -> None:
        self.meta = meta
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[Tensor, int]:
        i = self.indices[k]
        return self.transform(open_rgb(self.meta.image_path(i))), self.meta.labels[i]


def load_split(root: str | Path | None, *, val_size: int = VAL_SIZE,
               split_seed: int = 0) -> tuple[CUBMetadata, dict[str, list[int]]]:
    """Metadata and split indices for the CUB root (``root`` / ``$SALIENCYBENCH_CUB`` / ``~/data/cub``)."""
    cub_dir = find_cub_dir(resolve_root(root, "cub", ENV_VAR))
    meta = read_metadata(cub_dir)
    return meta, split_indices(meta.labels, meta.is_train, val_size=val_size, split_seed=split_seed)


@dataclass(frozen=True)
class CubOptions:
    """The CUB factory's loading options (all keywords of :func:`cub` besides the common ones).

    ``mask``: "auto" (segmentation where present, else bounding box), "segmentation", "bbox"
    or "none"; ``resize``: "center_crop" (official test transform, Resize(int(S / 0.875)) +
    CenterCrop(S)) or "square" (S x S, no crop); ``val_size`` / ``split_seed``: the validation
    split carved from the training images; ``num_workers``: image-loading threads (None: up to 8).
    """

    mask: str = "auto"
    val_size: int = VAL_SIZE
    split_seed: int = 0
    num_workers: int | None = None
    resize: str = "center_crop"

    def check(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"cub: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if self.mask not in ("auto", "segmentation", "bbox", "none"):
            raise ValueError(f"cub: mask must be auto / segmentation / bbox / none, got {self.mask!r}")
        if self.resize not in RESIZES:
            raise ValueError(f"cub: resize must be one of {', '.join(RESIZES)}, got {self.resize!r}")


def _load_images(meta: CUBMetadata, chosen: list[int], image_size: int,
                 opts: CubOptions) -> list[tuple[Tensor, Tensor | None, str]]:
    """(uint8 image, mask or None, mask source) of every chosen image, on ``opts.num_workers`` threads."""
    mask, resize = opts.mask, opts.resize
    to_tensor = image_transform(image_size, resize)

    def one(i: int) -> tuple[Tensor, Tensor | None, str]:
        img = open_rgb(meta.image_path(i))
        x = to_tensor(img)
        if mask == "none":
            return x, None, "none"
        seg = meta.segmentation_path(i)
        if mask in ("auto", "segmentation") and seg is not None and seg.is_file():
            return x, _load_segmentation(seg, image_size, resize), "segmentation"
        if mask == "segmentation":
            raise DataRootError("cub", meta.cub_dir, f"segmentation {seg} is missing",
                                expected=[str(seg)], fix=_FIX)
        if resize == "center_crop":
            return x, box_mask_cropped(meta.boxes[i], img.size, image_size), "bbox"
        return x, box_mask(meta.boxes[i], img.size, (image_size, image_size)), "bbox"

    workers = opts.num_workers if opts.num_workers is not None else min(8, os.cpu_count() or 1)
    if workers <= 1:
        return [one(i) for i in chosen]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, chosen))


def _choose(meta: CUBMetadata, pool_idx: list[int], n_samples: int | None, seed: int, opts: CubOptions) -> list[int]:
    """Class-balanced choice from ``pool_idx``; checks that the masks and image files exist."""
    if opts.mask == "segmentation" and meta.segmentation_dir is None:
        raise DataRootError("cub", meta.cub_dir, "segmentation masks not found",
                            expected=["segmentations/", "../segmentations/"],
                            fix="download segmentations.tgz from "
                                "https://www.vision.caltech.edu/datasets/cub_200_2011/ and run "
                                f"tar -xzf segmentations.tgz -C {meta.cub_dir.parent}")
    chosen_local = class_balanced_indices([meta.labels[i] for i in pool_idx], n_samples, seed=seed)
    chosen = [pool_idx[j] for j in chosen_local]
    missing = [str(meta.image_path(i)) for i in chosen if not meta.image_path(i).is_file()]
    if missing:
        raise DataRootError("cub", meta.cub_dir, f"{len(missing)} image file(s) listed in images.txt "
                            f"are missing, e.g. {missing[0]}", expected=["images/<class>/<file>.jpg"],
                            fix=_FIX)
    return chosen


@register_dataset("cub", kind="real", paper="Otsuki et al. 2024 (supplement A)", env_var=ENV_VAR,
                  num_classes=200, default_split="test", has_mask=True)
def cub(*, split: str = "test", n_samples: int | None = 1000, seed: int = 0,
        root: str | Path | None = None, image_size: int = 224, **kw: Any) -> SampleSet:
    """CUB-200-2011 samples of ``split`` (train / val / test / trainval / all) with object masks.

    ``kw``: the fields of :class:`CubOptions` (``mask``, ``resize``, ``val_size``,
    ``split_seed``, ``num_workers``; see the module doc); other keys are warned about.
    ``n_samples`` class-balanced with ``seed`` (``None`` = all).
    """
    known = {f.name for f in fields(CubOptions)}
    _warn_unused("cub", {k: v for k, v in kw.items() if k not in known})
    opts = CubOptions(**{k: v for k, v in kw.items() if k in known})
    opts.check(split)
    meta, splits = load_split(root, val_size=opts.val_size, split_seed=opts.split_seed)
    pool_idx = splits[split]
    chosen = _choose(meta, pool_idx, n_samples, seed, opts)
    loaded = _load_images(meta, chosen, image_size, opts)
    x = IMAGENET_NORMALIZATION.from_pixel(torch.stack([t[0] for t in loaded]).float().div_(255.0))
    masks = None if opts.mask == "none" else torch.stack([t[1] for t in loaded]).float()  # type: ignore[misc]
    sources = [t[2] for t in loaded]
    y = torch.tensor([meta.labels[i] for i in chosen], dtype=torch.long)
    info = {
        "split": split, "root": str(meta.cub_dir), "n_total": len(pool_idx),
        "n_selected": len(chosen), "seed": seed, "selection": "class_balanced",
        "split_sizes": {k: len(splits[k]) for k in ("train", "val", "test")},
        "val_size": opts.val_size, "split_seed": opts.split_seed, "image_size": image_size,
        "resize": opts.resize,
        "mask_sources": {s: sources.count(s) for s in sorted(set(sources))},
    }
    return SampleSet(x, y, normalization=IMAGENET_NORMALIZATION, num_classes=len(meta.class_names),
                     sample_ids=[os.path.splitext(meta.relpaths[i])[0] for i in chosen], mask=masks,
                     name="cub", class_names=meta.class_names, info=info)
