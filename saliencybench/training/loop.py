"""The one training loop: cross-entropy, an optimiser and schedule from a :class:`Recipe`,
optional validation with early stopping, and checkpoints in the one format of
:func:`saliencybench.models.checkpoint.save_checkpoint` (``{"state_dict": ..., **meta}``).

The loop consumes any re-iterable source of ``(x, y)`` batches (a ``DataLoader``, or the
zoo's seeded synthetic batches), so every recipe trains through the same code.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from saliencybench.models.checkpoint import save_checkpoint


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule and stopping rule of one training setup.

    ``optimizer`` is ``"sgd"`` (with ``momentum``) or ``"adamw"``. The schedule is, in this
    order: a one-cycle schedule stepped after every batch when ``one_cycle_pct`` is set (its
    warm-up fraction), StepLR every ``step_size`` epochs, or MultiStepLR at ``milestones``
    (factor ``gamma``). ``n_train`` limits the training samples (the zoo recipes).
    """

    name: str
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int
    milestones: tuple[int, ...] = ()   # MultiStepLR epochs (Lee & Chang 2021, Sec. 4)
    step_size: int | None = None       # StepLR period (Otsuki et al. 2024, supp. Table A: every 30 epochs)
    gamma: float = 0.1
    patience: int | None = None        # early stop after this many epochs without val-loss gain
    source: str = ""
    optimizer: str = "sgd"
    one_cycle_pct: float | None = None
    n_train: int | None = None


@dataclass(frozen=True)
class TrainOptions:
    """How (not what) to train: device, seed of the shuffling, loader workers, logging.

    ``log`` receives one line per epoch (None: silent); ``progress`` shows a tqdm bar per
    epoch with the running loss.
    """

    device: str | torch.device = "cpu"
    seed: int = 0
    num_workers: int = 0
    log: Callable[[str], None] | None = print
    progress: bool = False


def with_overrides(recipe: Recipe, **changes: Any) -> Recipe:
    """A copy of ``recipe`` with some fields changed (e.g. a smaller batch for one GPU)."""
    return replace(recipe, **changes)


def split_overrides(recipe: Recipe, options: TrainOptions,
                    kw: dict[str, Any]) -> tuple[Recipe, TrainOptions, dict[str, Any]]:
    """Split keyword overrides into recipe fields (``epochs``, ``lr``, ...; None = keep),
    option fields (``device``, ``seed``, ...) and the rest (returned)."""
    recipe_keys = {f.name for f in fields(Recipe)} - {"name"}
    option_keys = {f.name for f in fields(TrainOptions)}
    r = {k: kw[k] for k in recipe_keys & set(kw) if kw[k] is not None}
    o = {k: kw[k] for k in option_keys & set(kw)}
    rest = {k: v for k, v in kw.items() if k not in recipe_keys and k not in option_keys}
    return replace(recipe, **r), replace(options, **o), rest


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


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (learning rate, momentum, weight decay) or AdamW (learning rate, weight decay) on
    every trainable parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer != "sgd":
        raise ValueError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r} (sgd or adamw)")
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, *,
                   total_steps: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycleLR over ``total_steps`` batches (``one_cycle_pct``), or a per-epoch StepLR
    (``step_size``) / MultiStepLR (``milestones``), factor ``gamma``."""
    if recipe.one_cycle_pct is not None:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total_steps,
                                                   pct_start=recipe.one_cycle_pct)
    if recipe.step_size:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.milestones),
                                                gamma=recipe.gamma)


def _logits(out: Any) -> torch.Tensor:
    # Inception-v3 returns (logits, aux_logits) in training mode.
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Iterable, device: torch.device | str) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of ``model`` in eval mode over ``(x, y)`` batches."""
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    for x, y in batches:
        x, y = x.to(device), torch.as_tensor(y).to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += int(y.numel())
    return loss_sum / max(total, 1), correct / max(total, 1)


class _Epoch:
    """One pass over the training batches: forward, loss, backward, step (and a per-batch schedule)."""

    def __init__(self, model: nn.Module, recipe: Recipe, options: TrainOptions, steps: int) -> None:
        self.model, self.recipe, self.options = model, recipe, options
        self.device = torch.device(options.device)
        self.opt = make_optimizer(model, recipe)
        self.sched = make_scheduler(self.opt, recipe, total_steps=recipe.epochs * steps)
        self.per_batch = recipe.one_cycle_pct is not None

    def run(self, batches: Iterable, epoch: int) -> dict[str, Any]:
        self.model.train()
        pin = self.device.type == "cuda"
        bar = _progress(batches, f"{self.recipe.name} epoch {epoch + 1}/{self.recipe.epochs}", self.options.progress)
        seen, loss_sum, running = 0, 0.0, 0.0
        for step, (x, y) in enumerate(bar):
            x, y = x.to(self.device, non_blocking=pin), torch.as_tensor(y).to(self.device, non_blocking=pin)
            loss = nn.functional.cross_entropy(_logits(self.model(x)), y)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{self.recipe.name}: training loss became {float(loss.detach())} "
                                   f"at epoch {epoch + 1}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.per_batch:
                self.sched.step()
            lv = float(loss.detach())
            seen += int(y.numel())
            loss_sum += lv * int(y.numel())
            running = 0.9 * running + 0.1 * lv if step else lv
            if self.options.progress:
                bar.set_postfix(loss=f"{running:.3f}")
        if not self.per_batch:
            self.sched.step()
        return {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "lr": self.opt.param_groups[0]["lr"]}


def _progress(batches: Iterable, desc: str, show: bool) -> Any:
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, leave=False)


def fit(model: nn.Module, train_batches: Iterable, val_batches: Iterable | None, recipe: Recipe,
        options: TrainOptions) -> dict[str, Any]:
    """Train ``model`` with ``recipe`` for ``recipe.epochs`` epochs over ``train_batches``.

    With ``val_batches`` every epoch is validated; with ``recipe.patience`` as well, training
    stops after ``patience`` epochs without a lower validation loss and ``model`` ends with
    the best epoch's weights (otherwise the last epoch's). ``model`` is left in eval mode.
    Returns ``{"history", "best_epoch", "stopped_early", "seconds"}``.
    """
    model.to(torch.device(options.device))
    epoch_runner = _Epoch(model, recipe, options, steps=len(train_batches))  # type: ignore[arg-type]
    stopper = EarlyStopping(recipe.patience) if (recipe.patience and val_batches is not None) else None
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    stopped_early = False
    for epoch in range(recipe.epochs):
        row = epoch_runner.run(train_batches, epoch)
        if val_batches is not None:
            row["val_loss"], row["val_accuracy"] = evaluate_loss(model, val_batches, epoch_runner.device)
        history.append(row)
        if options.log:
            options.log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
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
    best_epoch = (stopper.best_epoch + 1) if (stopper is not None and stopper.best_epoch >= 0) else len(history)
    return {"history": history, "best_epoch": best_epoch, "stopped_early": stopped_early,
            "seconds": time.perf_counter() - t0}


def recipe_record(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain values (tuples as lists), as stored in checkpoints."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()}


def train_classifier(model: nn.Module, train_data: Dataset, val_data: Dataset | None, recipe: Recipe,
                     options: TrainOptions | None = None, *, out: str | Path | None = None,
                     meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on datasets with :func:`fit` (shuffled ``DataLoader``s seeded by
    ``options.seed``) and save a checkpoint at ``out`` holding ``meta`` (``arch``, ...).

    Returns a summary: recipe, epochs run, best epoch, whether it stopped early, losses and
    validation accuracy (of the best epoch), seconds, checkpoint path.
    """
    options = options or TrainOptions()
    dev = torch.device(options.device)
    g = torch.Generator().manual_seed(int(options.seed))
    pin = dev.type == "cuda"
    train_loader = DataLoader(train_data, batch_size=recipe.batch_size, shuffle=True, generator=g,
                              num_workers=options.num_workers, pin_memory=pin, drop_last=False)
    val_loader = (DataLoader(val_data, batch_size=recipe.batch_size, shuffle=False, num_workers=options.num_workers,
                             pin_memory=pin) if val_data is not None and len(val_data) > 0 else None)  # type: ignore[arg-type]
    res = fit(model, train_loader, val_loader, recipe, options)
    history, best_epoch = res["history"], res["best_epoch"]
    last = history[-1] if history else {}
    chosen = history[best_epoch - 1] if history else {}
    summary: dict[str, Any] = {
        "recipe": recipe.name, "epochs": len(history), "best_epoch": best_epoch,
        "stopped_early": res["stopped_early"], "train_loss": last.get("train_loss", math.nan),
        "val_loss": chosen.get("val_loss", math.nan), "val_accuracy": chosen.get("val_accuracy", math.nan),
        "seconds": res["seconds"], "path": None,
    }
    if out:
        meta = {"arch": "", **(meta or {})}
        path = save_checkpoint(out, model, arch=meta.pop("arch"), recipe=recipe_record(recipe),
                               seed=int(options.seed), history=history, best_epoch=best_epoch, **meta)
        summary["path"] = str(path)
    return summary
