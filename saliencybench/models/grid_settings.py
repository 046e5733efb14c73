"""GridPG, DiFull and DiPart: wrappers that turn any CNN classifier into an n x n grid model.

Rao, Böhle & Schiele, "Towards Better Understanding Attribution Methods" (CVPR 2022), main
paper §3.1 and supplement §F / §H. A grid image is an
n x n composite of single images (each cell the size the model was trained on). The wrapped
model outputs ``(B, n*n*K)`` logits: block ``cell*K .. cell*K+K-1`` are the logits used to
explain the image in ``cell`` (cells numbered row-major), so the combined target
``cell*K + class`` selects one logit and every attribution method runs unchanged.

- **GridPG**: the whole grid goes through the model with its own head, a single head, as
  in Rao et al. 2022 §3.1 and their official code. A *global-pooling* head (ResNet,
  Inception, the zoo's ``sb_resnet`` / ``sb_vgg``: an adaptive pool to 1 x 1, then fc) pools
  the whole composite feature map, so the GridPG logits are exactly ``model(grid)``. Only a
  head that flattens a fixed-size map (torchvision VGG: ``classifier`` after a 7 x 7 pool)
  cannot take the larger map; it becomes a convolution slid with stride 1 over d x d windows
  of the composite feature map and the logit map is averaged (supp. §F, the official
  code's "classifier kernel"). ``classifier="auto"`` picks between the two
  (:func:`is_global_pool_head`); ``"pool"`` / ``"slide"`` force one. Every cell's block holds
  those same logits (``head="global"``, the default). ``head="aligned"`` instead reads the
  slid logit map at the window aligned with each cell (one logit vector per cell); it is
  offered for studies of per-cell heads and equals DiPart's heads by construction.
- **DiFull**: each cell goes through the backbone separately (stacked along the batch), the
  cell feature maps are stitched back into a grid after every stage, and one head per cell
  classifies its own feature map. Gradients from a cell's head to any other cell are exactly
  zero (supp. §A).
- **DiPart**: the whole grid goes through the backbone; the final feature map is cropped
  per cell and one head per cell classifies its crop (supp. §A: receptive fields overlap at
  cell borders, so the cells are only partially disconnected).

The n*n blocks are separate heads: a class *probability* is the softmax of the selected
block's own K logits (:func:`head_softmax`, :func:`class_probabilities`; the official code's
``predict`` softmaxes the one head it evaluates), never a softmax over all n*n*K outputs,
which would make one cell's score depend on the other cells' images. ``wrapper.sb_heads``
is n*n; every method and metric that turns logits into probabilities goes through
:func:`class_probabilities`.

Layer names inside a wrapper are ``"backbone." + <name in the base model>`` for every module
of the base model's feature extractor (``backbone.layer2``, ``backbone.features.12``), and
``wrapper.sb_layers`` maps ``input`` / ``middle`` / ``final`` / ``cam`` to them. In DiFull the
activation of every such module (down to ``nn.Sequential`` children) is the stitched grid
tensor, so layer attributions have the grid's shape in every setting; modules *inside* a
residual block (``backbone.layer2.0.conv1``) see the cell batch there and are not valid
attribution layers for DiFull (:meth:`GridSetting.valid_layers` lists the valid ones).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.core.tensors import exact_fp32

SETTINGS = ("gridpg", "difull", "dipart")

_POOL_NAMES = ("avgpool", "pool", "global_pool", "gap")
_AUX_NAMES = ("AuxLogits", "aux_logits")


# -- grid <-> cells --------------------------------------------------------------------------

def grid_to_cells(x: Tensor, n: int) -> Tensor:
    """(B, C, n*h, n*w) grid -> (B*n*n, C, h, w) cells, row-major within each grid."""
    b, c, hh, ww = x.shape
    if hh % n or ww % n:
        raise ValueError(f"grid of size {hh}x{ww} cannot be split into {n}x{n} equal cells")
    h, w = hh // n, ww // n
    return x.reshape(b, c, n, h, n, w).permute(0, 2, 4, 1, 3, 5).reshape(b * n * n, c, h, w)


def cells_to_grid(x: Tensor, n: int) -> Tensor:
    """(B*n*n, C, h, w) cells -> (B, C, n*h, n*w) grid; inverse of :func:`grid_to_cells`."""
    bnn, c, h, w = x.shape
    if bnn % (n * n):
        raise ValueError(f"{bnn} cells do not form whole {n}x{n} grids")
    b = bnn // (n * n)
    return x.reshape(b, n, n, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, n * h, n * w)


def cell_slices(size: Sequence[int], n: int, cell: int) -> tuple[slice, slice]:
    """Row and column slices of ``cell`` (row-major) in an image of ``size`` = (H, W)."""
    hh, ww = int(size[0]), int(size[1])
    r, c = divmod(int(cell), n)
    h, w = hh // n, ww // n
    return slice(r * h, (r + 1) * h), slice(c * w, (c + 1) * w)


def cell_masks(size: Sequence[int], n: int) -> Tensor:
    """(n*n, 1, H, W) float masks, one per cell, row-major."""
    hh, ww = int(size[0]), int(size[1])
    masks = torch.zeros(n * n, 1, hh, ww)
    for k in range(n * n):
        rs, cs = cell_slices((hh, ww), n, k)
        masks[k, :, rs, cs] = 1.0
    return masks


# -- splitting a classifier into backbone and head ------------------------------------------

def split_backbone_head(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the top-level children forming the feature extractor and the head.

    The head starts at the first global pooling child (``avgpool`` / ``pool`` /
    ``global_pool`` / ``gap``) and is applied as ``rest(flatten(pool(features)))``, which is
    the forward of torchvision ResNets and VGGs and of the zoo models. A model can state its
    own split as ``model.sb_grid_split = (backbone_names, head_names)``.
    """
    explicit = getattr(model, "sb_grid_split", None)
    if explicit is not None:
        return list(explicit[0]), list(explicit[1])
    # auxiliary classifiers run only in training (Inception's AuxLogits): not in the chain
    names = [n for n, _ in model.named_children() if n not in _AUX_NAMES]
    for i, name in enumerate(names):
        if name in _POOL_NAMES:
            if i == 0 or i == len(names) - 1:
                break
            return names[:i], names[i:]
    raise ValueError(
        "cannot split the model into backbone and head: expected top-level children "
        f"<features...>, {'/'.join(_POOL_NAMES)}, <classifier...> but found {names}; "
        "set model.sb_grid_split = (backbone_names, head_names)"
    )


def is_global_pool_head(model: nn.Module, head_names: Sequence[str]) -> bool:
    """Whether the head starts with a global pool (output 1 x 1), so it takes a feature map
    of any size: ``model.sb_global_pool`` when set, else an ``AdaptiveAvgPool2d`` /
    ``AdaptiveMaxPool2d`` with output size 1 (torchvision ResNet / Inception, the zoo's
    ``sb_resnet`` and ``sb_vgg``). A torchvision VGG (7 x 7 pool, then a flatten into fc
    layers) is not one."""
    explicit = getattr(model, "sb_global_pool", None)
    if explicit is not None:
        return bool(explicit)
    if not head_names:
        return False
    first = getattr(model, head_names[0])
    if isinstance(first, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = first.output_size
        size = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
        return all(s == 1 for s in size)
    return False


def default_layers(model: nn.Module) -> dict[str, str | None]:
    """``input`` / ``middle`` / ``final`` / ``cam`` layer names of a base model.

    Uses ``model.sb_layers`` when present (zoo models). Otherwise, as in Rao et al. 2022
    (supp. §E, official code): torchvision-style ResNets use ``layer2`` (middle) and
    ``layer4`` (final); VGGs use the ReLU after the 5th and 8th convolution of ``features``
    (VGG11: ``features.12`` and ``features.19``; with BN ``features.17`` and ``features.27``);
    shorter VGG-like stacks use the ReLU after conv ceil(5/8 * #conv) and the last one.
    """
    layers = dict(getattr(model, "sb_layers", {}) or {})
    if {"middle", "final"} <= set(layers):
        layers.setdefault("input", None)
        layers.setdefault("cam", layers["final"])
        return layers
    children = dict(model.named_children())
    if "layer4" in children and "layer2" in children:
        return {"input": None, "middle": "layer2", "final": "layer4", "cam": "layer4"}
    if "Mixed_7c" in children and "Mixed_6e" in children:  # torchvision Inception-v3
        return {"input": None, "middle": "Mixed_6e", "final": "Mixed_7c", "cam": "Mixed_7c"}
    feats = children.get("features")
    if isinstance(feats, nn.Sequential):
        relus_after_conv: list[str] = []
        seen_conv = False
        for name, m in feats.named_children():
            if isinstance(m, nn.Conv2d):
                seen_conv = True
            elif isinstance(m, nn.ReLU) and seen_conv:
                relus_after_conv.append(f"features.{name}")
                seen_conv = False
        if relus_after_conv:
            k = len(relus_after_conv)
            mid = relus_after_conv[min(k, 5) - 1] if k >= 8 else relus_after_conv[max(0, -(-5 * k // 8) - 1)]
            fin = relus_after_conv[min(k, 8) - 1]
            return {"input": None, "middle": mid, "final": fin, "cam": fin}
    raise ValueError("no default layers for this architecture; set model.sb_layers")


# -- modules ---------------------------------------------------------------------------------

class CellWise(nn.Module):
    """Apply ``inner`` to every cell of a grid separately and stitch the outputs (DiFull)."""

    def __init__(self, inner: nn.Module, n: int) -> None:
        super().__init__()
        self.inner = inner
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        return cells_to_grid(self.inner(grid_to_cells(x, self.n)), self.n)


def _cellwise(module: nn.Module, n: int) -> nn.Module:
    """Rebuild ``module`` so that every ``nn.Sequential`` child boundary sees grid tensors."""
    if isinstance(module, nn.Sequential):
        out = nn.Sequential()
        for name, child in module.named_children():
            out.add_module(name, _cellwise(child, n))
        return out
    return CellWise(module, n)


class Backbone(nn.Module):
    """The base model's feature extractor, children registered under their original names."""

    def __init__(self, model: nn.Module, names: Sequence[str], *, cellwise_n: int | None = None) -> None:
        super().__init__()
        self.order = list(names)
        for name in self.order:
            child = getattr(model, name)
            self.add_module(name, child if cellwise_n is None else _cellwise(child, cellwise_n))
        # torchvision Inception-v3 with ImageNet weights re-normalises its input first
        pre = getattr(model, "_transform_input", None) if getattr(model, "transform_input", False) else None
        self._pre = [pre] if pre is not None else []  # a plain list: not a submodule

    def forward(self, x: Tensor) -> Tensor:
        for pre in self._pre:
            x = pre(x)
        for name in self.order:
            x = getattr(self, name)(x)
        return x


class Head(nn.Module):
    """``rest(flatten(pool(f)))``: the base model's classifier on one feature map."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.order = list(names)
        for name in self.order:
            self.add_module(name, getattr(model, name))

    def forward(self, f: Tensor) -> Tensor:
        x = getattr(self, self.order[0])(f)
        x = torch.flatten(x, 1)
        for name in self.order[1:]:
            x = getattr(self, name)(x)
        return x


class GridSetting(nn.Module):
    """An n x n grid model around a base classifier (shares its modules; no retraining).

    Args:
        model: base classifier in eval mode, logits out.
        setting: ``gridpg`` / ``difull`` / ``dipart``.
        n: grid side (2 for 2x2, 3 for 3x3).
        head: GridPG only: ``global`` (paper) or ``aligned`` (see module docstring).
        classifier: GridPG only: ``auto`` (default), ``pool`` (the model's own head on the
            whole composite feature map: ``model(grid)``) or ``slide`` (classifier slid over
            cell-sized windows, logit map averaged); ``auto`` = ``pool`` for a global-pooling
            head (:func:`is_global_pool_head`), else ``slide``.
        check: verify once, on a probe input of ``cell_size``, that backbone + head
            reproduce the base model's logits (catches a wrong backbone/head split).
        cell_size: (h, w) of one cell for the check; taken from the first forward if None.
    """

    def __init__(self, model: nn.Module, setting: str, n: int = 2, *, head: str = "global",
                 classifier: str = "auto", check: bool = True,
                 cell_size: Sequence[int] | None = None) -> None:
        super().__init__()
        setting = setting.lower()
        if setting not in SETTINGS:
            raise ValueError(f"unknown grid setting '{setting}'; use one of {SETTINGS}")
        if head not in ("global", "aligned"):
            raise ValueError("head must be 'global' or 'aligned'")
        if classifier not in ("auto", "pool", "slide"):
            raise ValueError("classifier must be 'auto', 'pool' or 'slide'")
        if n < 1:
            raise ValueError("n must be >= 1")
        self.setting = setting
        self.n = int(n)
        self.head_mode = head
        bb_names, head_names = split_backbone_head(model)
        self.backbone = Backbone(model, bb_names, cellwise_n=self.n if setting == "difull" else None)
        self.head = Head(model, head_names)
        if classifier == "auto":
            classifier = "pool" if is_global_pool_head(model, head_names) else "slide"
        self.classifier_mode = classifier
        self.sb_heads = self.n * self.n
        self._checked = not check
        self._base = [model]  # not registered: parameters are reached through backbone/head
        base_layers = default_layers(model)
        self.sb_layers = {k: (None if v is None else f"backbone.{v}") for k, v in base_layers.items()}
        self.num_classes: int | None = None
        if cell_size is not None and check:
            self.check_against(model, cell_size)
        self.train(model.training)

    # -- info ------------------------------------------------------------------------------
    @property
    def cells(self) -> int:
        return self.n * self.n

    def valid_layers(self) -> list[str]:
        """Module names whose activation is grid-shaped (valid attribution layers)."""
        out = []
        for name, m in self.backbone.named_modules(prefix="backbone"):
            if name == "backbone" or ".inner" in name:
                continue
            out.append(name)
        return out

    def check_against(self, model: nn.Module, cell_size: Sequence[int]) -> None:
        """Backbone + head on one cell must equal the base model (tolerance 1e-4 relative; no TF32
        on CUDA, :func:`exact_fp32`)."""
        p = next(model.parameters())
        with torch.no_grad(), exact_fp32():
            probe = torch.randn(2, self._in_channels(model), int(cell_size[0]), int(cell_size[1]),
                                generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
            ref = model(probe)
            bb = Backbone(model, self.backbone.order)
            mine = self.head(bb(probe))
        tol = 1e-4 * (1 + ref.abs().max().item())
        if ref.shape != mine.shape or not torch.allclose(ref, mine, rtol=1e-4, atol=tol):
            raise ValueError("backbone/head split does not reproduce the model's logits; "
                             "set model.sb_grid_split = (backbone_names, head_names)")
        self._checked = True

    @staticmethod
    def _in_channels(model: nn.Module) -> int:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                return m.in_channels
        return 3

    # -- forward ---------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """Grid-shaped final feature map (B, C, n*d, n*d)."""
        return self.backbone(x)

    def logit_map(self, x: Tensor) -> Tensor:
        """GridPG: head slid with stride 1 over the grid feature map -> (B, K, P, Q).

        P = (n-1)*d + 1 for cell feature size d (supp. §F). Position (i*d, j*d) is the window
        aligned with cell (i, j).
        """
        f = self.features(x)
        b, c, hh, ww = f.shape
        d_h, d_w = hh // self.n, ww // self.n
        if hh % self.n or ww % self.n:
            raise ValueError(f"feature map {hh}x{ww} is not divisible into {self.n}x{self.n} cells")
        win = F.unfold(f, kernel_size=(d_h, d_w), stride=1)  # (B, C*d_h*d_w, L)
        p, q = hh - d_h + 1, ww - d_w + 1
        win = win.transpose(1, 2).reshape(b * p * q, c, d_h, d_w)
        logits = self.head(win)
        k = logits.shape[-1]
        return logits.reshape(b, p, q, k).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        if not self._checked:
            self.check_against(self._base[0], (x.shape[-2] // self.n, x.shape[-1] // self.n))
        # the batch size is read from the tensors inside: methods may replace a layer's output
        # by a larger batch (occlusion at a layer) while feeding a single input
        if self.setting == "gridpg":
            if self.head_mode == "global" and self.classifier_mode == "pool":
                logits = self.head(self.features(x))  # = model(grid): GAP over the whole map
                return self._finish(logits.repeat(1, self.cells))
            lm = self.logit_map(x)
            b, k = lm.shape[0], lm.shape[1]
            if self.head_mode == "global":
                out = lm.mean(dim=(2, 3)).repeat(1, self.cells)
            else:
                d_h = (lm.shape[2] - 1) // (self.n - 1) if self.n > 1 else 1
                d_w = (lm.shape[3] - 1) // (self.n - 1) if self.n > 1 else 1
                aligned = lm[:, :, ::d_h, ::d_w]
                out = aligned.permute(0, 2, 3, 1).reshape(b, self.cells * k)
        else:
            f = self.features(x)  # grid-shaped in both DiFull (stitched) and DiPart
            logits = self.head(grid_to_cells(f, self.n))  # (B*n*n, K)
            out = logits.reshape(f.shape[0], self.cells * logits.shape[-1])
        return self._finish(out)

    def _finish(self, out: Tensor) -> Tensor:
        self.num_classes = out.shape[-1] // self.cells
        return out

    def extra_repr(self) -> str:
        return (f"setting={self.setting}, n={self.n}, head={self.head_mode}, "
                f"classifier={self.classifier_mode}")

