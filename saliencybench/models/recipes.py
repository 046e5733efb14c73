"""Training recipes of the papers, for models evaluated on real data.

- NIB-VGG on CIFAR-10 / CIFAR-100 (Lee & Chang 2021, paper 004, §4): SGD, learning rate
  0.1, momentum 0.9, weight decay 5e-4, total batch size 352 (88 on each of 4 GPUs), random
  crop + horizontal flip, random initialisation; CIFAR-10: 70 epochs, learning rate x0.1 at
  epoch 60; CIFAR-100: 175 epochs, x0.1 at epochs 100 and 150.
- ResNet50 fine-tuned on CUB-200-2011 (Otsuki et al. 2024, supplement A and Table A):
  ImageNet-pretrained ResNet50, SGD momentum 0.9, learning rate 1e-3, weight decay 1e-4,
  batch size 32, image size 224, at most 300 epochs, learning rate /10 every 30 epochs,
  cross-entropy, flip + crop augmentation, stop when the validation loss has not improved
  for six consecutive epochs; split 5394 / 600 / 5794 (:mod:`saliencybench.datasets.cub`).

:func:`run_recipe` is the entry point for ``saliencybench train <recipe>``; every recipe
takes ``epochs``, ``device``, ``out``, ``seed`` and returns a summary dict. Checkpoints are
written atomically as ``{"state_dict": ..., "arch": ..., "recipe": ...}`` and load with
:func:`saliencybench.models.checkpoint.load_checkpoint` (or a registry factory's
``checkpoint=``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from saliencybench.models.checkpoint import save_checkpoint


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule and stopping rule of one training setup."""

    name: str
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int
    milestones: tuple[int, ...] = ()   # MultiStepLR epochs (004)
    step_size: int | None = None       # StepLR period (000 Table A: every 30 epochs)
    gamma: float = 0.1
    patience: int | None = None        # early stop after this many epochs without val-loss gain
    source: str = ""


NIB_VGG_CIFAR10 = Recipe("nib_vgg_cifar10", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=70,
                         batch_size=352, milestones=(60,), gamma=0.1,
                         source="Lee & Chang 2021, Sec. 4")
NIB_VGG_CIFAR100 = Recipe("nib_vgg_cifar100", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=175,
                          batch_size=352, milestones=(100, 150), gamma=0.1,
                          source="Lee & Chang 2021, Sec. 4")
RESNET50_CUB = Recipe("resnet50_cub", lr=1e-3, momentum=0.9, weight_decay=1e-4, epochs=300,
                      batch_size=32, step_size=30, gamma=0.1, patience=6,
                      source="Otsuki et al. 2024, supplement A, Table A")


class EarlyStopping:
    """Stop when the monitored value (lower is better) has not improved for ``patience`` epochs.

    ``step(value)`` returns True when training should stop; ``improved`` tells whether the
    last value was a new best (strictly lower than every earlier one).
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.patience = int(patience)
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.improved = False
        self._epoch = -1

    def step(self, value: float) -> bool:
        self._epoch += 1
        self.improved = value < self.best
        if self.improved:
            self.best, self.best_epoch, self.bad_epochs = float(value), self._epoch, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD with the recipe's learning rate, momentum and weight decay (on every parameter)."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=recipe.lr,
                           momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: StepLR(step_size) or MultiStepLR(milestones), factor ``gamma``."""
    if recipe.step_size:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.milestones),
                                                gamma=recipe.gamma)


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of ``model`` in eval mode over ``loader``."""
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device), torch.as_tensor(y).to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += int(y.numel())
    return loss_sum / max(total, 1), correct / max(total, 1)


def _logits(out: Any) -> torch.Tensor:
    # Inception-v3 returns (logits, aux_logits) in training mode.
    return out.logits if hasattr(out, "logits") else out


def train_classifier(model: nn.Module, train_data: Dataset, val_data: Dataset | None, recipe: Recipe, *,
                     epochs: int | None = None, batch_size: int | None = None,
                     device: str | torch.device = "cpu", out: str | Path | None = None, seed: int = 0,
                     num_workers: int = 0, arch: str = "", extra: dict[str, Any] | None = None,
                     log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train ``model`` with ``recipe`` (cross-entropy), validate each epoch, save a checkpoint.

    With ``recipe.patience`` and validation data, training stops after ``patience`` epochs
    without a lower validation loss and the checkpoint holds the best epoch's weights;
    otherwise it holds the last epoch's. Returns a summary (losses, accuracy, epochs run,
    best epoch, whether it stopped early, checkpoint path).
    """
    dev = torch.device(device)
    n_epochs = int(recipe.epochs if epochs is None else epochs)
    bs = int(recipe.batch_size if batch_size is None else batch_size)
    g = torch.Generator().manual_seed(int(seed))
    pin = dev.type == "cuda"
    train_loader = DataLoader(train_data, batch_size=bs, shuffle=True, generator=g, num_workers=num_workers,
                              pin_memory=pin, drop_last=False)
    val_loader = (DataLoader(val_data, batch_size=bs, shuffle=False, num_workers=num_workers, pin_memory=pin)
                  if val_data is not None and len(val_data) > 0 else None)
    model.to(dev)
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe)
    stopper = EarlyStopping(recipe.patience) if (recipe.patience and val_loader is not None) else None
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    stopped_early = False
    for epoch in range(n_epochs):
        model.train()
        seen, loss_sum = 0, 0.0
        for x, y in train_loader:
            x, y = x.to(dev, non_blocking=pin), torch.as_tensor(y).to(dev, non_blocking=pin)
            loss = nn.functional.cross_entropy(_logits(model(x)), y)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{recipe.name}: training loss became {float(loss.detach())} at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += int(y.numel())
            loss_sum += float(loss.detach()) * int(y.numel())
        sched.step()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "lr": opt.param_groups[0]["lr"]}
        if val_loader is not None:
            row["val_loss"], row["val_accuracy"] = evaluate_loss(model, val_loader, dev)
        history.append(row)
        if log:
            log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if stopper is not None:
            stop = stopper.step(row["val_loss"])
            if stopper.improved:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if stop:
                stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    last = history[-1] if history else {}
    best_epoch = (stopper.best_epoch + 1) if (stopper is not None and stopper.best_epoch >= 0) else len(history)
    chosen = history[best_epoch - 1] if history else {}
    summary: dict[str, Any] = {
        "recipe": recipe.name, "epochs": len(history), "best_epoch": best_epoch,
        "stopped_early": stopped_early, "train_loss": last.get("train_loss", math.nan),
        "val_loss": chosen.get("val_loss", math.nan), "val_accuracy": chosen.get("val_accuracy", math.nan),
        "seconds": time.perf_counter() - t0, "path": None,
    }
    if out:
        rec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()}
        path = save_checkpoint(out, model, arch=arch, recipe=rec, seed=int(seed), history=history,
                               best_epoch=best_epoch, **(extra or {}))
        summary["path"] = str(path)
    return summary


# -- data -------------------------------------------------------------------------------------
def cifar_data(dataset: str, root: str | Path | None, *, download: bool = False) -> tuple[Dataset, Dataset]:
    """(train, test) CIFAR datasets with 004's augmentation (random crop, flip) and normalisation.

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
    """(train, val, num_classes) CUB datasets of the 5394 / 600 split, 000's preprocessing.

    Training: resize to (S*8/7)^2, random S x S crop, horizontal flip ("flipping and
    cropping", supplement A); validation: resize to S x S; ImageNet normalisation.
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
def train_nib_vgg_cifar(model: str = "nib_vgg16", dataset: str = "cifar10", *, root: str | Path | None = None,
                        download: bool = False, epochs: int | None = None, batch_size: int | None = None,
                        device: str | torch.device = "cpu", out: str | Path | None = None, seed: int = 0,
                        num_workers: int = 4, model_kwargs: dict[str, Any] | None = None,
                        log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train NIB-VGG ``model`` (nib_vgg13_6 .. nib_vgg16) from scratch on CIFAR-10/100 (004 §4).

    The test split is evaluated after every epoch (reported, never used for stopping).
    Default checkpoint: ``checkpoints/<model>_<dataset>.pt``.
    """
    from saliencybench.core.registry import MODELS

    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be cifar10 or cifar100, got {dataset!r}")
    recipe = NIB_VGG_CIFAR10 if dataset == "cifar10" else NIB_VGG_CIFAR100
    torch.manual_seed(int(seed))
    net = MODELS.get(model).obj(num_classes=10 if dataset == "cifar10" else 100, **(model_kwargs or {}))
    train, test = cifar_data(dataset, root, download=download)
    out = Path(out) if out else Path("checkpoints") / f"{model}_{dataset}.pt"
    return train_classifier(net, train, test, recipe, epochs=epochs, batch_size=batch_size, device=device,
                            out=out, seed=seed, num_workers=num_workers, arch=model,
                            extra={"dataset": dataset}, log=log)


def finetune_resnet50_cub(*, root: str | Path | None = None, weights: str | None = "IMAGENET1K_V1",
                          epochs: int | None = None, batch_size: int | None = None,
                          device: str | torch.device = "cpu", out: str | Path | None = None, seed: int = 0,
                          image_size: int = 224, val_size: int = 600, split_seed: int = 0,
                          num_workers: int = 4, arch: str = "resnet50",
                          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Fine-tune an ImageNet-pretrained ResNet50 on CUB with 000 Table A (early stopping on val loss).

    Default checkpoint: ``checkpoints/resnet50_cub.pt``; load it with
    ``resnet50(num_classes=200, checkpoint=...)``.
    """
    from saliencybench.models.torchvision_zoo import build_torchvision

    train, val, n_classes = cub_data(root, image_size=image_size, val_size=val_size, split_seed=split_seed)
    torch.manual_seed(int(seed))
    net = build_torchvision(arch, weights=weights, num_classes=n_classes)
    out = Path(out) if out else Path("checkpoints") / f"{arch}_cub.pt"
    return train_classifier(net, train, val, RESNET50_CUB, epochs=epochs, batch_size=batch_size, device=device,
                            out=out, seed=seed, num_workers=num_workers, arch=arch,
                            extra={"dataset": "cub", "num_classes": n_classes, "weights": str(weights)}, log=log)


RECIPES: dict[str, Callable[..., dict[str, Any]]] = {
    "nib_vgg_cifar10": lambda **kw: train_nib_vgg_cifar(kw.pop("model", "nib_vgg16"), "cifar10", **kw),
    "nib_vgg_cifar100": lambda **kw: train_nib_vgg_cifar(kw.pop("model", "nib_vgg16"), "cifar100", **kw),
    "resnet50_cub": finetune_resnet50_cub,
}
"""Recipe name -> function(**kw) for ``saliencybench train <recipe>``."""


def run_recipe(name: str, **kw: Any) -> dict[str, Any]:
    """Run recipe ``name`` (see :data:`RECIPES`) with keyword overrides (epochs, device, out, ...)."""
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, list(RECIPES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown training recipe {name!r}{hint} (recipes: {', '.join(RECIPES)})")
    return RECIPES[name](**kw)


def with_overrides(recipe: Recipe, **changes: Any) -> Recipe:
    """A copy of ``recipe`` with some fields changed (e.g. a smaller batch for one GPU)."""
    return replace(recipe, **changes)
