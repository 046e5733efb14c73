"""CIFAR-10 / CIFAR-100 through torchvision, normalised as in Lee & Chang 2021.

Layout (torchvision's, as unpacked from the official python archives)::

    ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    ROOT/cifar-100-python/{train, test, meta}

``download=True`` is passed through to ``torchvision.datasets.CIFAR10/100`` for users who are
online. Normalisation (Lee & Chang 2021, §4 "Experiment Setup"): per-channel mean (0.507, 0.487,
0.441) and standard deviation (0.267, 0.256, 0.276), for both CIFAR-10 and CIFAR-100.
CIFAR has no validation split; ``split="val"`` is the test split (what Rao et al. 2022 and Lee & Chang 2021
call the validation set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from saliencybench.core.errors import DataRootError
from saliencybench.core.registry import register_dataset
from saliencybench.core.types import Normalization, SampleSet
from saliencybench.datasets.imagenet import _warn_unused
from saliencybench.datasets.roots import resolve_root
from saliencybench.datasets.sampling import class_balanced_indices

ENV_VAR = "SALIENCYBENCH_CIFAR"
CIFAR_NORMALIZATION = Normalization((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))
"""Lee & Chang, §4: "the means of which were 0.507, 0.487, and 0.441, and the standard
deviations were 0.267, 0.256, and 0.276"."""

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 10),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"],
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", 100),
}


def _torchvision_class(name: str) -> Any:
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]


def _fix(name: str, root: Path) -> str:
    folder, _, url, _ = _LAYOUT[name]
    return (f"pass download=True (e.g. [datasets.{name}] download = true) to let torchvision "
            f"fetch it, or download {url} and run tar -xzf {url.rsplit('/', 1)[1]} -C {root}")


def open_torchvision(name: str, root: str | Path | None, *, train: bool, download: bool = False,
                     transform: Callable[[Any], Tensor] | None = None) -> Any:
    """``torchvision.datasets.CIFAR10/100(root, train=..., download=...)`` with clear errors."""
    if name not in _LAYOUT:
        raise ValueError(f"unknown CIFAR variant {name!r}")
    base = resolve_root(root, "cifar", ENV_VAR)
    folder, files, _, _ = _LAYOUT[name]
    if not download:
        if not base.is_dir():
            raise DataRootError(name, base, f"data root {base} does not exist (pass root=... or "
                                f"set {ENV_VAR})", fix=_fix(name, base))
        missing = [f"{folder}/{f}" for f in files if not (base / folder / f).is_file()]
        if missing:
            raise DataRootError(name, base, "CIFAR batch files missing", expected=missing,
                                fix=_fix(name, base))
    else:
        base.mkdir(parents=True, exist_ok=True)
    try:
        return _torchvision_class(name)(str(base), train=train, download=download, transform=transform)
    except RuntimeError as err:
        raise DataRootError(name, base, f"torchvision rejected the files in {base / folder} "
                            f"({err}); they are corrupted or not the official archive",
                            fix=f"delete {base / folder} and " + _fix(name, base)) from err


def _cifar(name: str, *, split: str, n_samples: int | None, seed: int,
           root: str | Path | None, image_size: int, download: bool) -> SampleSet:
    if split not in ("train", "test", "val"):
        raise ValueError(f"{name}: split must be train / test / val, got {split!r}")
    ds = open_torchvision(name, root, train=(split == "train"), download=download)
    labels = torch.as_tensor(list(ds.targets), dtype=torch.long)
    chosen = class_balanced_indices(labels, n_samples, seed=seed)
    idx = torch.as_tensor(chosen, dtype=torch.long)
    pixels = torch.from_numpy(ds.data[idx.numpy()]).permute(0, 3, 1, 2).float().div_(255.0)
    if image_size != pixels.shape[-1]:
        pixels = torch.nn.functional.interpolate(pixels, size=(image_size, image_size),
                                                 mode="bilinear", align_corners=False).clamp_(0, 1)
    x = CIFAR_NORMALIZATION.from_pixel(pixels)
    prefix = "train" if split == "train" else "test"
    num_classes = _LAYOUT[name][3]
    info = {"split": split, "root": str(ds.root), "n_total": int(labels.numel()),
            "n_selected": len(chosen), "seed": seed, "selection": "class_balanced",
            "image_size": image_size, "normalization": "Lee & Chang 2021, Sec. 4"}
    return SampleSet(x, labels[idx], normalization=CIFAR_NORMALIZATION, num_classes=num_classes,
                     sample_ids=[f"{prefix}-{i:05d}" for i in chosen], name=name,
                     class_names=list(ds.classes), info=info)


def _cifar_factory(name: str, num_classes: int) -> Callable[..., SampleSet]:
    """Register CIFAR variant ``name`` and return its dataset factory."""

    def factory(*, split: str = "test", n_samples: int | None = None, seed: int = 0,
                root: str | Path | None = None, image_size: int = 32, download: bool = False,
                **kw: Any) -> SampleSet:
        _warn_unused(name, kw)
        return _cifar(name, split=split, n_samples=n_samples, seed=seed, root=root,
                      image_size=image_size, download=download)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"CIFAR-{name[len('cifar'):]} samples (root: ``root`` / ``$SALIENCYBENCH_CIFAR`` / "
                       "``~/data/cifar``).")
    return register_dataset(name, kind="real", paper="Lee & Chang 2021", env_var=ENV_VAR,
                            num_classes=num_classes, default_split="test")(factory)


cifar10 = _cifar_factory("cifar10", 10)
cifar100 = _cifar_factory("cifar100", 100)
