"""Training (saliencybench.training): recipe hyper-parameters (Otsuki et al. 2024, supp. Table A;
Lee & Chang 2021, Sec. 4), schedules, early stopping, the one loop on tiny runs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from helpers.models import TinyCNN
from helpers.real_data import make_fake_cifar, make_fake_cub, skip_md5
from saliencybench.core.registry import MODELS
from saliencybench.models.checkpoint import load_checkpoint, read_state_dict
from saliencybench.training import recipes as R
from saliencybench.training.loop import TrainOptions


def test_recipe_hyperparameters_match_the_papers():
    r = R.NIB_VGG_CIFAR10
    assert (r.lr, r.momentum, r.weight_decay, r.epochs, r.milestones, r.gamma, r.batch_size) == \
        (0.1, 0.9, 5e-4, 70, (60,), 0.1, 352)
    assert (R.NIB_VGG_CIFAR100.epochs, R.NIB_VGG_CIFAR100.milestones) == (175, (100, 150))
    c = R.RESNET50_CUB
    assert (c.lr, c.momentum, c.weight_decay, c.batch_size, c.step_size, c.gamma, c.patience, c.epochs) == \
        (1e-3, 0.9, 1e-4, 32, 30, 0.1, 6, 300)


def _lrs(recipe: R.Recipe, n_epochs: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=recipe.lr)
    sched = R.make_scheduler(opt, recipe)
    out = []
    for _ in range(n_epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_step_at_the_stated_epochs():
    nib = _lrs(R.NIB_VGG_CIFAR10, 70)
    assert nib[59] == pytest.approx(0.1) and nib[60] == pytest.approx(0.01) and nib[69] == pytest.approx(0.01)
    c100 = _lrs(R.NIB_VGG_CIFAR100, 175)
    assert (c100[99], c100[100], c100[150]) == pytest.approx((0.1, 0.01, 0.001))
    cub = _lrs(R.RESNET50_CUB, 61)
    assert (cub[29], cub[30], cub[60]) == pytest.approx((1e-3, 1e-4, 1e-5))
    opt = R.make_optimizer(torch.nn.Linear(2, 2), R.RESNET50_CUB)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (1e-3, 0.9, 1e-4)


def test_early_stopping_counts_epochs_without_strict_improvement():
    stop = R.EarlyStopping(patience=2)
    decisions = [stop.step(v) for v in (1.0, 0.8, 0.8, 0.9)]
    assert decisions == [False, False, False, True]
    assert stop.best == 0.8 and stop.best_epoch == 1
    stop = R.EarlyStopping(patience=6)
    values = [5, 4, 3, 3.5, 3.1, 3.2, 3.3, 2.9, 3.4, 3.4, 3.4, 3.4, 3.4, 3.4]
    stopped_at = next(i for i, v in enumerate(values) if stop.step(v))
    assert stopped_at == 13 and stop.best_epoch == 7   # 6 epochs after the best (2.9 at index 7)
    with pytest.raises(ValueError):
        R.EarlyStopping(0)


def _toy_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g))


def test_train_classifier_one_epoch_writes_a_reloadable_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN()
    recipe = R.with_overrides(R.NIB_VGG_CIFAR10, epochs=1, batch_size=8)
    res = R.train_classifier(model, _toy_data(24, 0), _toy_data(8, 1), recipe, TrainOptions(log=None),
                             out=tmp_path / "ck" / "tiny.pt", meta={"arch": "tiny"})
    assert res["epochs"] == 1 and math.isfinite(res["train_loss"]) and math.isfinite(res["val_loss"])
    assert 0.0 <= res["val_accuracy"] <= 1.0 and not model.training
    fresh = TinyCNN()
    load_checkpoint(fresh, res["path"])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fresh(x), model(x))
    saved = torch.load(res["path"], weights_only=True)
    assert saved["arch"] == "tiny" and saved["recipe"]["milestones"] == [60] and len(saved["history"]) == 1


def test_train_classifier_stops_early_and_keeps_the_best_epoch(tmp_path):
    # lr 0: the validation loss never improves after epoch 1, so patience 2 stops after epoch 3
    recipe = R.with_overrides(R.RESNET50_CUB, lr=0.0, patience=2, epochs=20, batch_size=8)
    torch.manual_seed(0)
    model = TinyCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = R.train_classifier(model, _toy_data(16, 0), _toy_data(8, 1), recipe, TrainOptions(log=None),
                             out=tmp_path / "es.pt")
    assert res["stopped_early"] and res["epochs"] == 3 and res["best_epoch"] == 1
    state = read_state_dict(res["path"])
    assert all(torch.equal(state[k], v) for k, v in before.items())


def test_training_divergence_is_reported():
    class Nan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.full((x.shape[0], 5), float("nan")) * self.w

    with pytest.raises(RuntimeError, match="training loss became nan"):
        R.train_classifier(Nan(), _toy_data(8, 0), None, R.with_overrides(R.NIB_VGG_CIFAR10, epochs=1, batch_size=8),
                           TrainOptions(log=None))


def test_nib_vgg_cifar_recipe_runs_one_tiny_epoch(tmp_path, monkeypatch):
    pytest.importorskip("saliencybench.models.nib")
    skip_md5(monkeypatch)
    make_fake_cifar(tmp_path / "data", "cifar10", n_per_file=8)
    res = R.run_recipe("nib_vgg_cifar10", model="nib_vgg13_6", root=tmp_path / "data", epochs=1, batch_size=20,
                       out=tmp_path / "nib.pt", num_workers=0, model_kwargs={"width": 0.125, "hidden": 16}, log=None)
    assert res["epochs"] == 1 and math.isfinite(res["train_loss"]) and math.isfinite(res["val_loss"])
    m = MODELS.get("nib_vgg13_6").obj(num_classes=10, width=0.125, hidden=16, checkpoint=res["path"])
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def _cub_recipe_one_epoch(tmp_path, arch: str) -> None:
    make_fake_cub(tmp_path / "cub", n_classes=3, train_per_class=3, test_per_class=1, segmentations=False)
    res = R.finetune_resnet50_cub(TrainOptions(num_workers=0, log=None), root=tmp_path / "cub", weights=None,
                                  epochs=1, batch_size=6, image_size=32, val_size=3, out=tmp_path / f"{arch}.pt",
                                  arch=arch)
    assert res["epochs"] == 1 and math.isfinite(res["train_loss"]) and math.isfinite(res["val_loss"])
    saved = torch.load(res["path"], weights_only=True)
    assert saved["num_classes"] == 3 and saved["recipe"]["patience"] == 6 and saved["arch"] == arch
    m = MODELS.get(arch).obj(num_classes=3, checkpoint=res["path"])
    assert m.fc.out_features == 3


def test_cub_finetune_recipe_runs_one_tiny_epoch(tmp_path):
    """The CUB recipe's code path with a ResNet18 backbone (fast); ResNet50 below is marked slow."""
    _cub_recipe_one_epoch(tmp_path, "resnet18")


@pytest.mark.slow
def test_resnet50_cub_recipe_runs_one_tiny_epoch(tmp_path):
    _cub_recipe_one_epoch(tmp_path, "resnet50")


def test_unknown_recipe_suggests_names():
    with pytest.raises(KeyError, match="did you mean resnet50_cub"):
        R.run_recipe("resnet50-cub")


def test_one_loop_and_one_format_for_every_recipe(tmp_path):
    """The zoo recipes are recipes like the others: same loop (AdamW + one-cycle here) and the
    checkpoint format of save_checkpoint; overrides of unknown keys are refused."""
    zoo = R.ZOO_RECIPES["sb_vgg"]
    assert (zoo.optimizer, zoo.one_cycle_pct, zoo.lr, zoo.epochs, zoo.batch_size, zoo.n_train) == \
        ("adamw", 0.2, 4e-3, 8, 64, 8000)
    assert isinstance(R.make_optimizer(torch.nn.Linear(2, 2), zoo), torch.optim.AdamW)
    torch.manual_seed(0)
    model = TinyCNN()
    recipe = R.with_overrides(zoo, epochs=2, batch_size=8)
    res = R.train_classifier(model, _toy_data(16, 0), None, recipe, TrainOptions(log=None), out=tmp_path / "z.pt")
    assert res["epochs"] == 2 and set(torch.load(res["path"], weights_only=True)) >= {"state_dict", "recipe"}
    with pytest.raises(TypeError, match="unexpected keyword"):
        R.train_model("sb_vgg", epochs=1, colour="red")
