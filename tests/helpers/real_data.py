"""Builders of tiny fake dataset trees in the official on-disk layouts (ImageNet, CUB, CIFAR).

The real datasets cannot be downloaded here, so tests write a handful of random images in
exactly the layout a user's data has, and load them through the registered factories.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> None:
    """A random image of ``size=(width, height)`` at ``path`` (format from the suffix)."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        arr = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    else:
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    fmt = "JPEG" if path.suffix.lower() in (".jpeg", ".jpg") else None
    Image.fromarray(arr, mode=mode).save(path, format=fmt)


def make_fake_imagenet(root: Path, n_classes: int = 3, per_class: int = 2,
                       size: tuple[int, int] = (40, 32)) -> list[str]:
    """torchvision's ImageNet layout: ROOT/meta.bin + ROOT/val/<wnid>/ILSVRC2012_val_*.JPEG.

    meta.bin is what ``torchvision.datasets.imagenet.parse_devkit_archive`` writes:
    ``torch.save((wnid_to_classes, val_wnids))``. Returns the wnids (class order).
    """
    wnids = [f"n{1440764 + 1000 * c:08d}" for c in range(n_classes)]
    wnid_to_classes = {w: (f"class {c}", f"alias {c}") for c, w in enumerate(wnids)}
    val_wnids: list[str] = []
    k = 1
    for c, w in enumerate(wnids):
        for _ in range(per_class):
            write_image(root / "val" / w / f"ILSVRC2012_val_{k:08d}.JPEG", size, seed=k)
            val_wnids.append(w)
            k += 1
    root.mkdir(parents=True, exist_ok=True)
    torch.save((wnid_to_classes, val_wnids), root / "meta.bin")
    return wnids


def make_fake_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "emu"),
                           per_class: int = 3, size: tuple[int, int] = (36, 30)) -> None:
    """A plain class-folder tree ROOT/<class>/<i>.png (PNG, some grayscale)."""
    k = 0
    for cls in classes:
        for i in range(per_class):
            write_image(root / cls / f"img{i}.png", size, seed=100 + k, mode="L" if i == 0 else "RGB")
            k += 1


def make_fake_cub(root: Path, n_classes: int = 4, train_per_class: int = 5, test_per_class: int = 3,
                  size: tuple[int, int] = (50, 40), segmentations: bool = True,
                  seg_next_to_cub: bool = True) -> Path:
    """CUB-200-2011 official files under ROOT/CUB_200_2011 (+ ROOT/segmentations).

    Each image's segmentation is a white rectangle (value 255) over its bounding box, so a
    test can compare the segmentation mask with the box mask.
    """
    cub = root / "CUB_200_2011"
    cub.mkdir(parents=True, exist_ok=True)
    images, labels, split, boxes, classes = [], [], [], [], []
    seg_root = (root if seg_next_to_cub else cub) / "segmentations"
    image_id = 1
    w, h = size
    for c in range(1, n_classes + 1):
        cdir = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cdir}")
        for j in range(train_per_class + test_per_class):
            rel = f"{cdir}/Bird_{c}_{j:04d}_{image_id}.jpg"
            write_image(cub / "images" / rel, size, seed=1000 + image_id)
            bx, by, bw, bh = 5.0 + c, 4.0 + j % 3, 20.0, 16.0
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {1 if j < train_per_class else 0}")
            boxes.append(f"{image_id} {bx} {by} {bw} {bh}")
            if segmentations:
                seg = np.zeros((h, w), dtype=np.uint8)
                seg[int(by):int(by + bh), int(bx):int(bx + bw)] = 255
                p = seg_root / rel.replace(".jpg", ".png")
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(seg, mode="L").save(p)
            image_id += 1
    for name, rows in (("images.txt", images), ("image_class_labels.txt", labels),
                       ("train_test_split.txt", split), ("bounding_boxes.txt", boxes),
                       ("classes.txt", classes)):
        (cub / name).write_text("\n".join(rows) + "\n")
    return cub


def make_fake_cifar(root: Path, name: str = "cifar10", n_per_file: int = 20) -> None:
    """The python pickle batches of CIFAR-10 (cifar-10-batches-py) or CIFAR-100 (cifar-100-python).

    Labels cycle through the classes, pixel values are random uint8 in the official
    ``data`` layout (N, 3072) = channel-major 32x32.
    """
    rng = np.random.default_rng(0 if name == "cifar10" else 1)
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        folder, n_cls = root / "cifar-10-batches-py", 10
        key, meta_name, meta_key = "labels", "batches.meta", "label_names"
    else:
        folder, files, n_cls = root / "cifar-100-python", ["train", "test"], 100
        key, meta_name, meta_key = "fine_labels", "meta", "fine_label_names"
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for f in files:
        n = n_per_file if name == "cifar10" else n_per_file * (5 if f == "train" else 1) * 100
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        lab = [(offset + i) % n_cls for i in range(n)]
        offset += n
        entry = {"batch_label": f, "data": data, key: lab, "filenames": [f"{i}.png" for i in range(n)]}
        if name == "cifar100":
            entry["coarse_labels"] = [v // 5 for v in lab]
        with open(folder / f, "wb") as fh:
            pickle.dump(entry, fh)
    with open(folder / meta_name, "wb") as fh:
        pickle.dump({meta_key: [f"class_{i}" for i in range(n_cls)]}, fh)


def skip_md5(monkeypatch) -> None:
    """Make torchvision's CIFAR integrity check test existence only (fake files have other md5s)."""
    import os

    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
