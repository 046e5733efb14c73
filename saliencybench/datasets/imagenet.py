"""ImageNet (ILSVRC 2012) validation images as evaluation samples.

Two on-disk layouts are supported:

- ``imagenet``: torchvision's layout, read through ``torchvision.datasets.ImageNet(root,
  split="val")``: ``ROOT/meta.bin`` (or ``ROOT/ILSVRC2012_devkit_t12.tar.gz``, from which
  torchvision writes meta.bin) and ``ROOT/val/<wnid>/*.JPEG`` (or
  ``ROOT/ILSVRC2012_img_val.tar``, which torchvision unpacks on first use).
- ``imagenet_folder``: a plain class-folder tree ``ROOT/<class>/<image>`` (or
  ``ROOT/<split>/<class>/<image>``); classes are indexed in sorted folder order, which for
  WordNet-id folders is the standard ImageNet class order.

Samples are drawn class-balanced and deterministically (one per class for the default 1000
samples, as in Otsuki et al. 2024 §5.3, "1,000 samples ... equal representation from each
class") from the labels *before* any image is read, so only the selected images are decoded.
Preprocessing is the standard ImageNet evaluation transform: resize the shorter side to 256,
center-crop 224, ImageNet mean/std normalisation.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from saliencybench.core.errors import DataRootError
from saliencybench.core.registry import register_dataset
from saliencybench.core.types import IMAGENET_NORMALIZATION, SampleSet
from saliencybench.datasets.roots import require_dir, resolve_root
from saliencybench.datasets.sampling import class_balanced_indices

ENV_VAR = "SALIENCYBENCH_IMAGENET"
FOLDER_ENV_VAR = "SALIENCYBENCH_IMAGENET_FOLDER"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
VAL_TAR = "ILSVRC2012_img_val.tar"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_FIX_TORCHVISION = (
    "download ILSVRC2012_devkit_t12.tar.gz and ILSVRC2012_img_val.tar from "
    "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php into ROOT; "
    "torchvision.datasets.ImageNet(ROOT, split='val') then writes meta.bin and unpacks val/"
)


# -- preprocessing ------------------------------------------------------------------------------
def eval_transform(image_size: int = 224, resize_size: int | None = None) -> Callable[[Any], Tensor]:
    """PIL image -> (3, S, S) uint8 tensor: resize shorter side, center crop.

    ``resize_size`` defaults to ``round(image_size * 256 / 224)`` (256 for 224). The uint8
    output is converted to float in one batched step by :func:`load_images` (per-image float
    conversions were the bottleneck of decoding on a busy CPU).
    """
    from torchvision import transforms as T

    if resize_size is None:
        resize_size = int(round(image_size * 256 / 224))
    return T.Compose([
        T.Resize(resize_size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(image_size),
        T.PILToTensor(),
    ])


def open_rgb(path: str | Path) -> Any:
    """Open an image file as an RGB PIL image (grayscale / CMYK / palette converted)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def load_images(paths: Sequence[str | Path], transform: Callable[[Any], Tensor],
                num_workers: int | None = None) -> Tensor:
    """Decode and transform ``paths`` into one (N, C, H, W) float tensor in [0, 1], in order.

    ``transform`` maps a PIL image to a tensor; uint8 results are scaled by 1/255 once for the
    whole stack. Decoding runs in a thread pool (PIL releases the GIL while decoding), ``num_workers``
    threads (default: up to 8, bounded by the CPU count).
    """
    if len(paths) == 0:
        raise ValueError("no images to load")
    workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)

    def one(p: str | Path) -> Tensor:
        return transform(open_rgb(p))

    if workers <= 1 or len(paths) == 1:
        images = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            images = list(pool.map(one, paths))
    out = torch.stack(images)
    return out.float().div_(255.0) if out.dtype == torch.uint8 else out


def _warn_unused(name: str, kw: dict[str, Any]) -> None:
    if kw:
        warnings.warn(f"{name}: ignoring unknown arguments {sorted(kw)}", stacklevel=3)


def _relative_id(path: str, base: str) -> str:
    rel = os.path.relpath(path, base)
    return os.path.splitext(rel)[0].replace(os.sep, "/")


@dataclass(frozen=True)
class _ImageFiles:
    """The image files of one ImageNet layout: paths, labels, the base of the sample ids."""

    name: str
    paths: Sequence[str]
    labels: Sequence[int]
    base: str
    class_names: list[str]
    info: dict[str, Any]


def _build_sample_set(files: _ImageFiles, *, n_samples: int | None, seed: int, image_size: int,
                      resize_size: int | None, num_workers: int | None) -> SampleSet:
    paths, labels = files.paths, files.labels
    chosen = class_balanced_indices(list(labels), n_samples, seed=seed)
    x = load_images([paths[i] for i in chosen], eval_transform(image_size, resize_size), num_workers)
    x = IMAGENET_NORMALIZATION.from_pixel(x)
    y = torch.tensor([int(labels[i]) for i in chosen], dtype=torch.long)
    ids = [_relative_id(paths[i], files.base) for i in chosen]
    info = dict(files.info, n_total=len(paths), n_selected=len(chosen), seed=seed,
                selection="class_balanced", image_size=image_size,
                resize_size=resize_size or int(round(image_size * 256 / 224)))
    return SampleSet(x, y, normalization=IMAGENET_NORMALIZATION, num_classes=len(files.class_names),
                     sample_ids=ids, name=files.name, class_names=files.class_names, info=info)


# -- torchvision layout -------------------------------------------------------------------------
def check_torchvision_layout(root: Path, split: str = "val") -> None:
    """Raise :class:`DataRootError` unless ``torchvision.datasets.ImageNet(root, split)`` can work."""
    require_dir("imagenet", root, ENV_VAR, _FIX_TORCHVISION)
    split_tar = VAL_TAR if split == "val" else "ILSVRC2012_img_train.tar"
    if not (root / "meta.bin").is_file() and not (root / DEVKIT).is_file():
        raise DataRootError(
            "imagenet", root, "class metadata not found",
            expected=["meta.bin", DEVKIT],
            fix=f"torchvision.datasets.ImageNet(root, split='{split}') needs one of them; "
                + _FIX_TORCHVISION,
        )
    split_dir = root / split
    if not split_dir.is_dir() and not (root / split_tar).is_file():
        raise DataRootError(
            "imagenet", root, f"{split} images not found",
            expected=[f"{split}/<wnid>/*.JPEG", split_tar],
            fix=_FIX_TORCHVISION,
        )
    if split_dir.is_dir() and not any(p.is_dir() for p in split_dir.iterdir()):
        raise DataRootError(
            "imagenet", root, f"{split_dir} has no class folders",
            expected=[f"{split}/<wnid>/*.JPEG"],
            fix="re-extract the validation images with torchvision's layout (one folder per "
                "WordNet id); delete the folder and let torchvision unpack " + split_tar,
        )


@register_dataset("imagenet", kind="real", paper="Otsuki et al. 2024; Jeon et al. 2022; Rao et al. 2022",
                  env_var=ENV_VAR, num_classes=1000, default_split="val")
def imagenet(*, split: str = "val", n_samples: int | None = 1000, seed: int = 0,
             root: str | Path | None = None, image_size: int = 224, resize_size: int | None = None,
             num_workers: int | None = None, **kw: Any) -> SampleSet:
    """ImageNet validation samples through ``torchvision.datasets.ImageNet(root, split)``.

    Root: ``root`` or ``$SALIENCYBENCH_IMAGENET`` or ``~/data/imagenet``. ``n_samples`` are
    chosen class-balanced with ``seed`` (default 1000 = one per class); ``None`` = all.
    """
    _warn_unused("imagenet", kw)
    from torchvision.datasets import ImageNet

    base = resolve_root(root, "imagenet", ENV_VAR)
    check_torchvision_layout(base, split)
    try:
        ds = ImageNet(str(base), split=split)
    except (RuntimeError, FileNotFoundError, OSError) as err:
        raise DataRootError("imagenet", base, f"torchvision could not read the dataset: {err}",
                            fix=_FIX_TORCHVISION) from err
    paths = [p for p, _ in ds.samples]
    labels = [int(t) for _, t in ds.samples]
    class_names = [c[0] if isinstance(c, tuple) else str(c) for c in ds.classes]
    files = _ImageFiles("imagenet", paths, labels, str(base / split), class_names,
                        {"split": split, "root": str(base), "layout": "torchvision", "wnids": list(ds.wnids)})
    return _build_sample_set(files, n_samples=n_samples, seed=seed, image_size=image_size,
                             resize_size=resize_size, num_workers=num_workers)


# -- plain class-folder tree --------------------------------------------------------------------
def _folder_base(root: Path, split: str | None) -> Path:
    if split and (root / split).is_dir():
        return root / split
    return root


@register_dataset("imagenet_folder", kind="real", env_var=FOLDER_ENV_VAR, default_split="val")
def imagenet_folder(*, split: str | None = "val", n_samples: int | None = 1000, seed: int = 0,
                    root: str | Path | None = None, image_size: int = 224,
                    resize_size: int | None = None, num_workers: int | None = None,
                    **kw: Any) -> SampleSet:
    """Images in ``ROOT/<class>/<image>`` (or ``ROOT/<split>/<class>/<image>``), ImageNet preprocessing.

    Root: ``root`` or ``$SALIENCYBENCH_IMAGENET_FOLDER`` or ``~/data/imagenet_folder``.
    Class indices follow sorted folder names.
    """
    _warn_unused("imagenet_folder", kw)
    fix = ("arrange the images as ROOT/<class>/<image>.JPEG, one folder per class "
           "(e.g. the ImageNet validation set sorted into WordNet-id folders)")
    root_path = resolve_root(root, "imagenet_folder", FOLDER_ENV_VAR)
    require_dir("imagenet_folder", root_path, FOLDER_ENV_VAR, fix)
    base = _folder_base(root_path, split)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise DataRootError("imagenet_folder", base, "no class folders found",
                            expected=["<class>/<image>.JPEG"], fix=fix)
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for idx, cls in enumerate(classes):
        files = sorted(
            str(f) for f in (base / cls).iterdir()
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            empty.append(cls)
        paths.extend(files)
        labels.extend([idx] * len(files))
    if empty:
        raise DataRootError("imagenet_folder", base,
                            f"{len(empty)} class folder(s) contain no images: {', '.join(empty[:5])}",
                            expected=[f"{empty[0]}/*.JPEG"], fix=fix)
    files = _ImageFiles("imagenet_folder", paths, labels, str(base), classes,
                        {"split": split, "root": str(base), "layout": "class_folders"})
    return _build_sample_set(files, n_samples=n_samples, seed=seed, image_size=image_size,
                             resize_size=resize_size, num_workers=num_workers)
