"""Training recipes, all run by the one loop of :mod:`saliencybench.training.loop`.

- The default zoo on ``synthetic`` (:data:`ZOO_RECIPES`, :func:`train_model`): AdamW with a
  one-cycle learning-rate schedule; the shipped checkpoints of ``sb_resnet`` / ``sb_vgg`` /
  ``sb_nibvgg`` were trained with exactly these on CPU, seed 0. The train split is generated
  once from its own seed stream (stored as uint8 pixels), shuffled with a seeded generator and
  augmented with flips and transposes (every class is a rotation- and reflection-invariant
  shape family, so the label is kept).
- NIB-VGG on CIFAR-10 / CIFAR-100 (Lee & Chang 2021, Sec. 4): SGD, learning rate 0.1, momentum
  0.9, weight decay 5e-4, total batch size 352 (88 on each of 4 GPUs), random crop +
  horizontal flip, random initialisation; CIFAR-10: 70 epochs, learning rate x0.1 at epoch
  60; CIFAR-100: 175 epochs, x0.1 at epochs 100 and 150.
- ResNet50 fine-tuned on CUB-200-2011 (Otsuki et al. 2024, supplement A and Table A):
  ImageNet-pretrained ResNet50, SGD momentum 0.9, learning rate 1e-3, weight decay 1e-4,
  batch size 32, image size 224, at most 300 epochs, learning rate /10 every 30 epochs,
  cross-entropy, flip + crop augmentation, stop when the validation loss has not improved
  for six consecutive epochs; split 5394 / 600 / 5794 (:mod:`saliencybench.datasets.cub`).

:func:`run_recipe` is the entry point for ``saliencybench train <recipe>`` and
:func:`train_model` for ``saliencybench train <zoo model>``; both take keyword overrides of
the recipe (``epochs``, ``batch_size``, ``lr``, ...) and of :class:`TrainOptions` (``device``,
``seed``, ...) and return a summary dict. Every checkpoint is written atomically as
``{"state_dict": ..., "arch": ..., "recipe": ..., ...}`` and loads with
:func:`saliencybench.models.checkpoint.load_checkpoint` (or a registry factory's ``checkpoint=``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset

from saliencybench.core.names import did_you_mean
from saliencybench.core.registry import MODELS
from saliencybench.datasets.synthetic import SPLIT_SIZES, SYNTHETIC_NORMALIZATION, generate_range
from saliencybench.models.checkpoint import save_checkpoint
from saliencybench.models.zoo import checkpoint_path
from saliencybench.training.loop import (  # noqa: F401 - re-exported: the recipes' public vocabulary
    EarlyStopping,
    Recipe,
    TrainOptions,
    evaluate_loss,
    fit,
    make_optimizer,
    make_scheduler,
    recipe_record,
    split_overrides,
    train_classifier,
    with_overrides,
)

NIB_VGG_CIFAR10 = Recipe("nib_vgg_cifar10", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=70,
                         batch_size=352, milestones=(60,), gamma=0.1,
                         source="Lee & Chang 2021, Sec. 4")
NIB_VGG_CIFAR100 = Recipe("nib_vgg_cifar100", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=175,
                          batch_size=352, milestones=(100, 150), gamma=0.1,
                          source="Lee & Chang 2021, Sec. 4")
RESNET50_CUB = Recipe("resnet50_cub", lr=1e-3, momentum=0.9, weight_decay=1e-4, epochs=300,
                      batch_size=32, step_size=30, gamma=0.1, patience=6,
                      source="Otsuki et al. 2024, supplement A, Table A")


def _zoo_recipe(name: str, epochs: int) -> Recipe:
    return Recipe(name, lr=4e-3, momentum=0.0, weight_decay=1e-4, epochs=epochs, batch_size=64,
                  optimizer="adamw", one_cycle_pct=0.2, n_train=8000, source="the default zoo")


#: Per-model recipes of the default zoo; the shipped checkpoints were trained with exactly these.
ZOO_RECIPES: dict[str, Recipe] = {
    "sb_resnet": _zoo_recipe("sb_resnet", 6),
    "sb_vgg": _zoo_recipe("sb_vgg", 8),
    # the bias-free NIB VGG learns more slowly (6 epochs: 90.3% test accuracy)
    "sb_nibvgg": _zoo_recipe("sb_nibvgg", 14),
}


# -- data -------------------------------------------------------------------------------------
def _augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Random horizontal / vertical flip and transpose of the whole batch (dihedral group)."""
    flips = torch.rand(3, generator=g) < 0.5
    if flips[0]:
        x = x.flip(-1)
    if flips[1]:
        x = x.flip(-2)
    if flips[2]:
        x = x.transpose(-1, -2)
    return x


class SyntheticTrainBatches:
    """The first ``n_train`` samples of the synthetic train split as augmented batches.

    Each pass draws a permutation from the seeded generator, then one flip / transpose draw
    per batch from the same generator, so training is deterministic given ``seed``.
    """

    def __init__(self, n_train: int, batch_size: int, seed: int, device: torch.device | str) -> None:
        self.n_train = min(int(n_train), SPLIT_SIZES["train"])
        self.batch_size = int(batch_size)
        self.device = device
        pixels, self.labels, _ = generate_range("train", 0, self.n_train, seed=0)
        self.pixels = pixels.mul_(255.0).round_().to(torch.uint8)
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (self.n_train + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(self.n_train, generator=self.g)
        for step in range(len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            x = SYNTHETIC_NORMALIZATION.from_pixel(self.pixels[idx].to(self.device).float().div_(255.0))
            yield _augment(x, self.g), self.labels[idx].to(self.device)


def synthetic_batches(split: str, n: int | None = None, batch_size: int = 256) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` batches of the first ``n`` samples (default all) of a synthetic split, seed 0."""
    total = SPLIT_SIZES[split] if n is None else min(int(n), SPLIT_SIZES[split])
    for start in range(0, total, batch_size):
        pix, y, _ = generate_range(split, start, min(start + batch_size, total), seed=0)
        yield SYNTHETIC_NORMALIZATION.from_pixel(pix), y


def cifar_data(dataset: str, root: str | Path | None, *, download: bool = False) -> tuple[Dataset, Dataset]:
    """(train, test) CIFAR datasets with the augmentation of Lee & Chang 2021, Sec. 4 (random
    crop, flip) and normalisation.

    The crop pads by 4 pixels (the paper says "random crop" without the padding).
    """
    from torchvision import transforms as T

    from saliencybench.datasets.cifar import CIFAR_NORMALIZATION, open_torchvision

    norm = T.Normalize(CIFAR_NORMALIZATION.mean, CIFAR_NORMALIZATION.std)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    test_tf = T.Compose([T.ToTensor(), norm])
    train = open_torchvision(dataset, root, train=True, download=download, transform=train_tf)
    test = open_torchvision(dataset, root, train=False, download=False, transform=test_tf)
    return train, test


def cub_data(root: str | Path | None, *, image_size: int = 224, val_size: int = 600,
             split_seed: int = 0) -> tuple[Dataset, Dataset, int]:
    """(train, val, num_classes) CUB datasets of the 5394 / 600 split, preprocessing of
    Otsuki et al. 2024, supplement A.

    Training: resize to (S*8/7)^2, random S x S crop, horizontal flip ("flipping and
    cropping"); validation: resize to S x S; ImageNet normalisation.
    """
    from torchvision import transforms as T

    from saliencybench.core.types import IMAGENET_NORMALIZATION
    from saliencybench.datasets.cub import CUBImages, load_split

    meta, splits = load_split(root, val_size=val_size, split_seed=split_seed)
    norm = T.Normalize(IMAGENET_NORMALIZATION.mean, IMAGENET_NORMALIZATION.std)
    big = int(round(image_size * 8 / 7))
    train_tf = T.Compose([T.Resize((big, big), antialias=True), T.RandomCrop(image_size),
                          T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize((image_size, image_size), antialias=True), T.ToTensor(), norm])
    return (CUBImages(meta, splits["train"], train_tf), CUBImages(meta, splits["val"], val_tf),
            len(meta.class_names))


# -- recipes ------------------------------------------------------------------------------------
def train_model(name: str, *, out: str | Path | None = None, eval_n: int | None = None,
                **overrides: Any) -> dict[str, Any]:
    """Train zoo model ``name`` on ``synthetic`` with its :data:`ZOO_RECIPES` entry and save it.

    Args:
        name: a zoo model (``sb_resnet``, ``sb_vgg``, ``sb_nibvgg``).
        out: checkpoint path; default ``saliencybench/models/checkpoints/<name>.pt`` (written
            atomically); ``out=""`` skips saving.
        eval_n: evaluate on the first ``eval_n`` val / test samples only (default all).
        overrides: recipe fields (``epochs``, ``batch_size``, ``lr``, ``n_train``: the first
            ``n_train`` samples of the 12000-sample train split) and :class:`TrainOptions`
            fields (``device``, ``seed``: initialisation, shuffling, augmentation, dropout;
            ``progress``: tqdm bars, default on).

    Returns ``{"accuracy", "val_accuracy", "epochs", "seconds", "n_train", "path"}``, where
    ``accuracy`` is top-1 on the held-out test split (all 2000 images unless ``eval_n``).
    """
    entry = MODELS.get(name)
    recipe, options, rest = split_overrides(ZOO_RECIPES[name], TrainOptions(progress=True), overrides)
    if rest:
        raise TypeError(f"train_model() got unexpected keyword arguments {sorted(rest)}")
    if not options.progress and "log" not in overrides:
        options = replace(options, log=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        model = entry.obj(pretrained=False).to(options.device).train()
        batches = SyntheticTrainBatches(int(recipe.n_train or SPLIT_SIZES["train"]), recipe.batch_size,
                                        options.seed, options.device)
        res = fit(model, batches, None, recipe, options)
        _, val_acc = evaluate_loss(model, synthetic_batches("val", eval_n), options.device)
        _, acc = evaluate_loss(model, synthetic_batches("test", eval_n), options.device)
    path: Path | None = None
    if out != "":
        path = save_checkpoint(checkpoint_path(name) if out is None else out, model, arch=name,
                               recipe=recipe_record(recipe), seed=int(options.seed), history=res["history"])
    if options.progress:
        print(f"{name}: test accuracy {acc:.4f} (val {val_acc:.4f}), {recipe.epochs} epochs, "
              f"{res['seconds']:.0f} s" + (f", saved {path}" if path else ""))
    return {"accuracy": acc, "val_accuracy": val_acc, "epochs": recipe.epochs, "seconds": res["seconds"],
            "n_train": batches.n_train, "path": str(path) if path else None}


def train_nib_vgg_cifar(model: str = "nib_vgg16", dataset: str = "cifar10", options: TrainOptions | None = None, *,
                        root: str | Path | None = None, download: bool = False, out: str | Path | None = None,
                        model_kwargs: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train NIB-VGG ``model`` (nib_vgg13_6 .. nib_vgg16) from scratch on CIFAR-10/100
    (Lee & Chang 2021, Sec. 4); ``overrides`` change recipe fields (``epochs``, ``batch_size``).

    The test split is evaluated after every epoch (reported, never used for stopping).
    Default checkpoint: ``checkpoints/<model>_<dataset>.pt``.
    """
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be cifar10 or cifar100, got {dataset!r}")
    base = NIB_VGG_CIFAR10 if dataset == "cifar10" else NIB_VGG_CIFAR100
    recipe, options, rest = split_overrides(base, options or TrainOptions(num_workers=4), overrides)
    if rest:
        raise TypeError(f"train_nib_vgg_cifar() got unexpected keyword arguments {sorted(rest)}")
    torch.manual_seed(int(options.seed))
    net = MODELS.get(model).obj(num_classes=10 if dataset == "cifar10" else 100, **(model_kwargs or {}))
    train, test = cifar_data(dataset, root, download=download)
    out = Path(out) if out else Path("checkpoints") / f"{model}_{dataset}.pt"
    return train_classifier(net, train, test, recipe, options, out=out, meta={"arch": model, "dataset": dataset})


def finetune_resnet50_cub(options: TrainOptions | None = None, *, root: str | Path | None = None,
                          weights: str | None = "IMAGENET1K_V1", out: str | Path | None = None,
                          image_size: int = 224, val_size: int = 600, split_seed: int = 0,
                          arch: str = "resnet50", **overrides: Any) -> dict[str, Any]:
    """Fine-tune an ImageNet-pretrained ResNet50 on CUB with Otsuki et al. 2024, supp. Table A
    (early stopping on the validation loss); ``overrides`` change recipe fields.

    Default checkpoint: ``checkpoints/resnet50_cub.pt``; load it with
    ``resnet50(num_classes=200, checkpoint=...)``.
    """
    from saliencybench.models.torchvision_zoo import build_torchvision

    recipe, options, rest = split_overrides(RESNET50_CUB, options or TrainOptions(num_workers=4), overrides)
    if rest:
        raise TypeError(f"finetune_resnet50_cub() got unexpected keyword arguments {sorted(rest)}")
    train, val, n_classes = cub_data(root, image_size=image_size, val_size=val_size, split_seed=split_seed)
    torch.manual_seed(int(options.seed))
    net = build_torchvision(arch, weights=weights, num_classes=n_classes)
    out = Path(out) if out else Path("checkpoints") / f"{arch}_cub.pt"
    return train_classifier(net, train, val, recipe, options, out=out,
                            meta={"arch": arch, "dataset": "cub", "num_classes": n_classes, "weights": str(weights)})


RECIPES: dict[str, Callable[..., dict[str, Any]]] = {
    "nib_vgg_cifar10": lambda **kw: train_nib_vgg_cifar(kw.pop("model", "nib_vgg16"), "cifar10", **kw),
    "nib_vgg_cifar100": lambda **kw: train_nib_vgg_cifar(kw.pop("model", "nib_vgg16"), "cifar100", **kw),
    "resnet50_cub": lambda **kw: finetune_resnet50_cub(**kw),
}
"""Recipe name -> function(**kw) for ``saliencybench train <recipe>``."""


def run_recipe(name: str, **kw: Any) -> dict[str, Any]:
    """Run recipe ``name`` (see :data:`RECIPES`) with keyword overrides (epochs, device, out, ...).

    Overrides of :class:`TrainOptions` fields (``device``, ``seed``, ``num_workers``, ``log``)
    start from ``num_workers=4``.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown training recipe {name!r}{did_you_mean(name, RECIPES, quote=False)} "
                       f"(recipes: {', '.join(RECIPES)})")
    option_keys = {f.name for f in fields(TrainOptions)}
    options = replace(TrainOptions(num_workers=4), **{k: v for k, v in kw.items() if k in option_keys})
    return RECIPES[name](options=options, **{k: v for k, v in kw.items() if k not in option_keys})
