"""Batched, exact LRP: trace the model into nodes, one recording forward, one relevance pass.

Supported architectures (checked once per model against ``model(x)``):

- sequential CNNs whose children, in registration order, are the forward order (torchvision
  VGG: ``features`` / ``avgpool`` / ``classifier``; ``nn.Sequential``; conftest's TinyCNN);
  a flatten is inserted before the first ``nn.Linear`` that meets a 4-d tensor;
- torchvision-style ResNets (``conv1 bn1 relu maxpool layer1..4 avgpool fc``) with
  torchvision ``BasicBlock`` / ``Bottleneck`` blocks (or any block with ``conv1 bn1 conv2 bn2
  [conv3 bn3] downsample``), including the zoo's ``sb_resnet``.

The forward pass is written here, not taken from the modules' ``forward``: blocks reuse one
``self.relu`` (in place) and add the skip in place, which would overwrite the activations we
record. ReLUs are applied functionally and merges out of place; parameters are only read.

Relevance flows (Otsuki et al. 2024, paper 001): softmax probability of the target class at
its logit (§4.1); linear layers by :func:`~saliencybench.attributions.lrp_rules.linear_relevance`
(z+ Eq. 2-3 or epsilon); pooling as linear maps; BatchNorm and ReLU pass relevance unchanged
(§3.1), or with ``canonize_bn`` the rule sees conv + eval-mode BN as one folded conv; at each
residual merge Relevance Splitting (Eq. 4 / 5, §4.3), optionally with no relevance through
identity skips (§4.4, Table 2 "Include identical"); projection skips
propagate with the same rule as the main branch.

Two choices of the official code of Otsuki et al. 2024 are parameters (``LRPConfig``):
``input_rule`` for the first linear layer, the one that sees the image (``ones``: z+ on a tensor
of ones, as the official code; ``zplus``: z+ on the normalised image; ``zbox``; ``flat``; see
:func:`~saliencybench.attributions.lrp_rules.input_relevance`), and ``maxpool`` (``wta``: the
max pool's own z rule, relevance to the arg-max; ``avg2``: a 2x2 average pool, stride 2, in its
place in the relevance pass, as the official code).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from saliencybench.attributions.lrp_rules import (
    INPUT_RULES,
    LINEAR_TYPES,
    MAXPOOL_MODES,
    POOL_TYPES,
    SPLIT_MODES,
    LayerRule,
    avg2_pool,
    input_relevance,
    linear_relevance,
    pool_relevance,
    split_relevance,
)
from saliencybench.core.tensors import exact_fp32, fast_layout
from saliencybench.core.outputs import class_probabilities
from saliencybench.models.nib import NIBBatchNorm2d  # noqa: E402  (BN without mean/shift, 004)

PASS_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, NIBBatchNorm2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
)


class LRPUnsupportedModel(NotImplementedError):
    """The model's architecture cannot be traced into LRP nodes."""


@dataclass
class Node:
    """One step of the traced forward pass.

    ``kind`` is ``linear`` (conv / linear), ``pool``, ``relu``, ``pass`` (BN, dropout),
    ``flatten`` or ``block`` (a residual block with ``main`` nodes and ``skip`` nodes, where
    ``skip=None`` is an identity skip). ``stage`` locates the node relative to the residual
    blocks: the 1-based block number inside a block, ``k + 0.5`` after the k-th block.
    """

    kind: str
    name: str
    module: nn.Module | None = None
    main: list["Node"] = field(default_factory=list)
    skip: list["Node"] | None = None
    stage: float = 0.5
    fold_bn: nn.Module | None = None  # an eval-mode BatchNorm right after this conv


def _mark_bn_folds(nodes: list[Node]) -> None:
    """Let the forward pass run conv+BN as one convolution with folded parameters.

    Only the forward changes (BN still passes relevance unchanged, 001 §3.1); it saves
    one elementwise pass per BatchNorm. The folded node skips its BN node in the forward.
    """
    for a, b in zip(nodes, nodes[1:]):
        if (a.kind == "linear" and isinstance(a.module, nn.Conv2d) and b.kind == "pass"
                and isinstance(b.module, nn.BatchNorm2d) and b.module.track_running_stats
                and b.module.running_mean is not None):
            a.fold_bn = b.module
    for n in nodes:
        if n.kind == "block":
            _mark_bn_folds(n.main)
            if n.skip:
                _mark_bn_folds(n.skip)


@dataclass(frozen=True)
class LRPConfig:
    """Parameters of one LRP variant (see :func:`lrp_relevance`)."""

    rule: str = "zplus"
    split: str = "ratio"
    include_identity: bool = True
    init: str = "prob"
    epsilon: float = 1e-6
    stabilizer: float = 0.0
    zplus_mode: str = "paper"
    switch_block: int = 8
    # rules see conv + eval-mode BN as one folded conv (zennit's MergeBatchNorm): True for every
    # rule, "epsilon" only where the epsilon rule applies (whose denominator must include BN's
    # shift), False: BN passes relevance unchanged (001 §3.1)
    canonize_bn: bool | str = False
    # the first linear layer's rule (lrp_rules.input_relevance): zplus on the signed image,
    # ones (001 official code), zbox (bounds of the normalised pixel range [0, 1], from
    # input_mean / input_std), flat
    input_rule: str = "zplus"
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    # max pooling in the relevance pass: wta (z rule of the max pool: relevance to the
    # arg-max) or avg2 (a 2x2 average pool, stride 2, in its place: 001 official code)
    maxpool: str = "wta"

    def __post_init__(self) -> None:
        if self.input_rule not in INPUT_RULES:
            raise ValueError(f"unknown input_rule '{self.input_rule}' ({', '.join(INPUT_RULES)})")
        if self.maxpool not in MAXPOOL_MODES:
            raise ValueError(f"unknown maxpool '{self.maxpool}' ({', '.join(MAXPOOL_MODES)})")
        for k in ("input_mean", "input_std"):
            v = getattr(self, k)
            if v is not None:
                v = (float(v),) if isinstance(v, (int, float)) else tuple(float(t) for t in v)
                object.__setattr__(self, k, v)
        if self.input_rule == "zbox" and (self.input_mean is None or self.input_std is None):
            raise ValueError("input_rule='zbox' needs input_mean and input_std (the normalisation "
                             "of the model input; the box is (0 - mean) / std .. (1 - mean) / std)")
        if self.input_std is not None and any(v <= 0 for v in self.input_std):
            raise ValueError(f"input_std must be positive, got {self.input_std}")
        if self.rule not in ("zplus", "epsilon", "mixture"):
            raise ValueError(f"unknown LRP rule '{self.rule}' (zplus, epsilon or mixture)")
        if self.split not in SPLIT_MODES:
            raise ValueError(f"unknown relevance split '{self.split}' ({', '.join(SPLIT_MODES)})")
        if self.init not in ("prob", "logit"):
            raise ValueError(f"unknown initial relevance '{self.init}' (prob or logit)")
        if self.canonize_bn not in (True, False, "epsilon"):
            raise ValueError(f"canonize_bn must be true, false or 'epsilon', got {self.canonize_bn!r}")
        if self.zplus_mode not in ("paper", "alpha1beta0"):
            raise ValueError(f"unknown zplus_mode '{self.zplus_mode}' (paper or alpha1beta0)")


@dataclass
class LRPResult:
    """Relevance at the input and the conservation checkpoints.

    ``checkpoints`` maps ``input`` / ``first_block`` / ``last_block`` (001 §5.5, Fig. 7) to
    per-sample relevance sums (B,) (NaN for models without residual blocks);
    ``layer_sums`` (only with ``record_sums=True``) maps ``<node>.in`` and, per block,
    ``.out``, ``.split.skip``, ``.split.main``, ``.skip.in``, ``.main.in`` to (B,) sums.
    """

    relevance: Tensor
    initial: Tensor
    logits: Tensor
    checkpoints: dict[str, Tensor]
    layer_sums: dict[str, Tensor] | None = None


# --------------------------------------------------------------------------- tracing
def _is_residual_block(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("conv1", "bn1", "conv2", "bn2", "downsample"))


def _leaf_node(name: str, m: nn.Module, stage: float) -> Node:
    if isinstance(m, LINEAR_TYPES):
        return Node("linear", name, m, stage=stage)
    if isinstance(m, POOL_TYPES):
        return Node("pool", name, m, stage=stage)
    if isinstance(m, nn.ReLU):
        return Node("relu", name, m, stage=stage)
    if isinstance(m, PASS_TYPES):
        return Node("pass", name, m, stage=stage)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise LRPUnsupportedModel(f"LRP: Flatten '{name}' must flatten dims 1..-1")
        return Node("flatten", name, m, stage=stage)
    raise LRPUnsupportedModel(
        f"LRP cannot propagate through '{name}' ({type(m).__name__}); supported: conv, linear, "
        "pooling, BatchNorm, ReLU, dropout, flatten and torchvision-style residual blocks"
    )


def _block_node(name: str, blk: nn.Module, index: int) -> Node:
    main_names = ["conv1", "bn1", "relu", "conv2", "bn2"]
    if hasattr(blk, "conv3"):
        main_names += ["relu", "conv3", "bn3"]
    main = []
    for a in main_names:
        if a == "relu":
            main.append(Node("relu", f"{name}.relu", None, stage=index))
        else:
            main.append(_leaf_node(f"{name}.{a}", getattr(blk, a), index))
    skip = None
    if blk.downsample is not None:
        skip = []
        _walk(blk.downsample, f"{name}.downsample", skip, [index], inside=index)
    return Node("block", name, blk, main=main, skip=skip, stage=index)


def _walk(module: nn.Module, prefix: str, out: list[Node], count: list[int], inside: int | None = None) -> None:
    children = list(module.named_children())
    if not children:
        out.append(_leaf_node(prefix, module, inside if inside is not None else count[0] + 0.5))
        return
    for name, child in children:
        full = f"{prefix}.{name}" if prefix else name
        if inside is None and _is_residual_block(child):
            count[0] += 1
            out.append(_block_node(full, child, count[0]))
        elif isinstance(child, nn.Sequential) or (list(child.children()) and not _is_residual_block(child)):
            if not isinstance(child, nn.Sequential):
                raise LRPUnsupportedModel(
                    f"LRP cannot trace container '{full}' ({type(child).__name__}); "
                    "only nn.Sequential containers and residual blocks are supported"
                )
            _walk(child, full, out, count, inside)
        else:
            out.append(_leaf_node(full, child, inside if inside is not None else count[0] + 0.5))


def trace_model(model: nn.Module) -> list[Node]:
    """Nodes of ``model`` in forward order (see the module docstring for what is supported)."""
    nodes: list[Node] = []
    _walk(model, "", nodes, [0])
    _mark_bn_folds(nodes)
    if not any(n.kind == "linear" for n in nodes):
        raise LRPUnsupportedModel("LRP found no convolution or linear layer in the model")
    return nodes


def iter_blocks(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n.kind == "block"]


# --------------------------------------------------------------------------- forward
@dataclass
class _Trace:
    inputs: dict[str, Tensor] = field(default_factory=dict)
    outputs: dict[str, Tensor] = field(default_factory=dict)
    shapes: dict[str, torch.Size] = field(default_factory=dict)
    merges: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)


_FOLDED: dict[int, tuple[Any, tuple, Tensor, Tensor]] = {}


def _folded_params(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Conv weight and bias with the eval-mode BN folded in, cached until a tensor changes."""
    ts = [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]
    key = tuple((t._version, t.data_ptr(), t.dtype, t.device) if t is not None else None for t in ts)
    hit = _FOLDED.get(id(conv))
    if hit is not None and hit[0]() is conv and hit[1] == key:
        return hit[2], hit[3]
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        w = conv.weight * scale.view(-1, 1, 1, 1)
        b = -bn.running_mean * scale
        if conv.bias is not None:
            b = b + conv.bias * scale
        if bn.bias is not None:
            b = b + bn.bias
    if hit is None or hit[0]() is not conv:
        weakref.finalize(conv, _FOLDED.pop, id(conv), None)
    _FOLDED[id(conv)] = (weakref.ref(conv), key, w.detach(), b.detach())
    return w, b


def _folded_proxy(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A stand-in of ``conv`` whose weight and bias include the following eval-mode BN.

    The proxy gets its own parameter dict, so the model itself is never touched.
    """
    w, b = _folded_params(conv, bn)
    proxy = type(conv).__new__(type(conv))
    proxy.__dict__ = {**conv.__dict__, "_parameters": {"weight": w, "bias": b}}
    return proxy


def _forward(nodes: list[Node], h: Tensor, tr: _Trace, keep_out: set[str],
             canon: frozenset[str] = frozenset()) -> Tensor:
    """Run the traced model. ``keep_out``: linear nodes whose output the epsilon rule reuses
    (their BN is applied separately unless the node is in ``canon``, where the rule itself sees
    the folded conv + BN, so the folded output is the one to keep)."""
    skip_bn: nn.Module | None = None
    for n in nodes:
        if skip_bn is not None and n.module is skip_bn:
            skip_bn = None
            continue
        if n.kind == "linear":
            if isinstance(n.module, nn.Linear) and h.ndim > 2:
                tr.shapes[n.name] = h.shape
                h = h.flatten(1)
            tr.inputs[n.name] = h
            m = n.module
            if n.fold_bn is not None and not n.fold_bn.training and (n.name not in keep_out or n.name in canon):
                w, b = _folded_params(m, n.fold_bn)
                h = torch.nn.functional.conv2d(h, w, b, m.stride, m.padding, m.dilation, m.groups)
                skip_bn = n.fold_bn
            else:
                h = m(h)
            if n.name in keep_out:
                tr.outputs[n.name] = h
        elif n.kind == "pool":
            tr.inputs[n.name] = h
            h = n.module(h)
        elif n.kind == "relu":
            h = torch.relu(h)
        elif n.kind == "pass":
            h = n.module(h)
        elif n.kind == "flatten":
            tr.shapes[n.name] = h.shape
            h = h.flatten(1)
        elif n.kind == "block":
            x = h
            h_main = _forward(n.main, x, tr, keep_out, canon)
            h_skip = x if n.skip is None else _forward(n.skip, x, tr, keep_out, canon)
            tr.merges[n.name] = (h_skip, h_main)
            h = torch.relu(h_skip + h_main)
    return h


_VERIFIED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def _verify_trace(model: nn.Module, nodes: list[Node], x: Tensor) -> None:
    """Check once per model that the traced forward reproduces ``model(x)`` (without TF32 on
    CUDA, whose rounding would exceed the tolerance: :func:`exact_fp32`)."""
    if _VERIFIED.get(model):
        return
    with torch.no_grad(), exact_fp32():
        ref = model(x[:1])
        ours = _forward(nodes, x[:1], _Trace(), set())
    if ref.shape != ours.shape or not torch.allclose(ref, ours, rtol=1e-4, atol=1e-5 * (1 + float(ref.abs().max()))):
        raise LRPUnsupportedModel(
            f"LRP's traced forward of {type(model).__name__} does not reproduce model(x): "
            "its forward is not the children in order (see saliencybench.attributions.lrp_engine)"
        )
    _VERIFIED[model] = True


# --------------------------------------------------------------------------- backward
def _rule_for(n: Node, cfg: LRPConfig, n_blocks: int) -> LayerRule:
    signed = cfg.zplus_mode == "alpha1beta0"
    zplus = LayerRule("zplus", cfg.stabilizer, signed)
    eps = LayerRule("epsilon", cfg.epsilon)
    if cfg.rule == "zplus":
        return zplus
    if cfg.rule == "epsilon":
        return eps
    # mixture (001 supp. Table C): epsilon after the switch_block-th block, alpha1beta0 before;
    # without residual blocks: epsilon on the fully connected layers.
    if n_blocks == 0:
        return eps if isinstance(n.module, nn.Linear) else zplus
    return eps if n.stage > cfg.switch_block else zplus


def _folds_bn(n: Node, rule: LayerRule, cfg: LRPConfig) -> bool:
    """Whether the rule of linear node ``n`` sees its conv and the eval-mode BN after it as one
    folded conv (``LRPConfig.canonize_bn``)."""
    wanted = cfg.canonize_bn is True or (cfg.canonize_bn == "epsilon" and rule.kind == "epsilon")
    return wanted and n.fold_bn is not None and not n.fold_bn.training


def _per_sample_sum(r: Tensor) -> Tensor:
    return r.detach().flatten(1).sum(1, dtype=torch.float64)


class _Pass:
    def __init__(self, cfg: LRPConfig, tr: _Trace, n_blocks: int, blocks: list[Node],
                 sums: dict[str, Tensor] | None, input_node: str | None = None) -> None:
        self.cfg, self.tr, self.n_blocks, self.sums = cfg, tr, n_blocks, sums
        self.input_node = input_node
        self.first = blocks[0].name if blocks else None
        self.last = blocks[-1].name if blocks else None
        self.checkpoints: dict[str, Tensor] = {}

    def _record(self, key: str, r: Tensor) -> None:
        if self.sums is not None:
            self.sums[key] = _per_sample_sum(r)

    def run(self, nodes: list[Node], r: Tensor) -> Tensor:
        for n in reversed(nodes):
            if n.kind == "linear":
                rule = _rule_for(n, self.cfg, self.n_blocks)
                # folded: conv + BN as one linear map (zennit's BN canonizer); BN then passes R
                module = _folded_proxy(n.module, n.fold_bn) if _folds_bn(n, rule, self.cfg) else n.module
                h = self.tr.inputs[n.name]
                if n.name == self.input_node and self.cfg.input_rule != "zplus":
                    r = input_relevance(module, h, r, self.cfg.input_rule, *self._box(h))
                else:
                    r = linear_relevance(module, h, r, rule, self.tr.outputs.get(n.name))
                if n.name in self.tr.shapes:
                    r = r.reshape(self.tr.shapes[n.name])
            elif n.kind == "pool":
                # max pooling's z-rule is exact (relevance to the arg-max, as zennit's plain
                # gradient); average pooling is stabilised like zennit's Norm rule.
                is_max = "Max" in type(n.module).__name__
                stab = 0.0 if is_max else (self.cfg.epsilon if self.cfg.rule == "epsilon" else self.cfg.stabilizer)
                pool = n.module
                if is_max and self.cfg.maxpool == "avg2":
                    pool = avg2_pool(n.module)
                    h = self.tr.inputs[n.name]
                    if pool(h[:1]).shape[1:] != r.shape[1:]:
                        raise LRPUnsupportedModel(
                            f"maxpool='avg2': a 2x2 average pool of '{n.name}''s input "
                            f"{tuple(h.shape[1:])} does not give the max pool's output shape "
                            f"{tuple(r.shape[1:])} (use maxpool='wta')")
                r = pool_relevance(pool, self.tr.inputs[n.name], r, stab)
            elif n.kind == "flatten":
                r = r.reshape(self.tr.shapes[n.name])
            elif n.kind == "block":
                r = self._block(n, r)
            # relu / pass (BatchNorm, dropout): relevance unchanged (001 §3.1)
            self._record(f"{n.name}.in", r)
        return r

    def _box(self, h: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Bounds of the normalised pixel range [0, 1] per channel (zbox input rule)."""
        if self.cfg.input_rule != "zbox":
            return None, None
        c = h.shape[1]
        mean = torch.tensor(self.cfg.input_mean, dtype=h.dtype, device=h.device)
        std = torch.tensor(self.cfg.input_std, dtype=h.dtype, device=h.device)
        if mean.numel() == 1:
            mean = mean.expand(c)
        if std.numel() == 1:
            std = std.expand(c)
        if mean.numel() != c or std.numel() != c:
            raise ValueError(f"input_mean / input_std have {mean.numel()} / {std.numel()} values "
                             f"for an input with {c} channels")
        shape = (1, c) + (1,) * (h.ndim - 2)
        return ((0 - mean) / std).view(shape), ((1 - mean) / std).view(shape)

    def _block(self, n: Node, r: Tensor) -> Tensor:
        h_skip, h_main = self.tr.merges[n.name]
        self._record(f"{n.name}.out", r)
        if n.skip is None and not self.cfg.include_identity:
            r_skip, r_main = torch.zeros_like(r), r  # 001 §4.4: R_s = 0 on identity skips
        else:
            r_skip, r_main = split_relevance(r, h_skip, h_main, self.cfg.split, self.cfg.epsilon)
        self._record(f"{n.name}.split.skip", r_skip)
        self._record(f"{n.name}.split.main", r_main)
        r_main_in = self.run(n.main, r_main)
        r_skip_in = r_skip if n.skip is None else self.run(n.skip, r_skip)
        self._record(f"{n.name}.main.in", r_main_in)
        self._record(f"{n.name}.skip.in", r_skip_in)
        r_in = r_main_in + r_skip_in
        if n.name == self.first:
            self.checkpoints["first_block"] = _per_sample_sum(r_in)
        if n.name == self.last:
            self.checkpoints["last_block"] = _per_sample_sum(r_in)
        return r_in


def _input_node(nodes: list[Node]) -> str:
    """Name of the linear layer that sees the image: the first linear node, reached through
    nothing but relevance-passing nodes (BN, dropout, identity)."""
    for n in nodes:
        if n.kind == "linear":
            return n.name
        if n.kind != "pass":
            break
    raise LRPUnsupportedModel("LRP input_rule: the model's first layer (after BN / dropout) is "
                              "not a convolution or linear layer; use input_rule='zplus'")


_NODES: "weakref.WeakKeyDictionary[nn.Module, list[Node]]" = weakref.WeakKeyDictionary()


def lrp_relevance(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    config: LRPConfig | None = None,
    initial_relevance: Tensor | None = None,
    record_sums: bool = False,
    unit_pass: bool = True,
    **params: Any,
) -> LRPResult:
    """LRP relevance at the input for a batch, with conservation checkpoints.

    Args:
        model: a supported model (module docstring), in eval mode.
        x: normalised input (B,C,H,W).
        target: (B,) class indices.
        config: an :class:`LRPConfig`; alternatively its fields as keyword arguments.
        initial_relevance: (B,) values placed at the target logit instead of the softmax
            probability / logit chosen by ``config.init`` (used to test linearity).
        record_sums: also return the per-sample relevance sum at every node.
        unit_pass: propagate a relevance of 1 at the target and multiply the result (map,
            checkpoints, sums) by the initial relevance afterwards. Every rule here is linear in
            the relevance it receives, so this is the same map, but a softmax probability of
            1e-30 (common for untrained models and wrong targets) no longer drives the whole
            pass into float32's subnormal range, where Intel CPUs are slow (random-init
            ResNet50, batch 8, 2 threads of a Xeon: 16.2 s before, 1.6 s after; saliency 1.0 s)
            and values keep few significant bits. ``False`` runs the pass at the initial
            relevance's own scale (tests the linearity).

    Cost: one forward pass plus, per linear layer, one modified forward (z+) and one
    transposed convolution, for the whole batch.
    """
    cfg = config if config is not None else LRPConfig(**params)
    nodes = _NODES.get(model)
    if nodes is None:
        nodes = trace_model(model)
        _NODES[model] = nodes
    _verify_trace(model, nodes, x)
    blocks = iter_blocks(nodes)
    keep_out, canon = set(), set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        stack.extend(n.main + (n.skip or []))
        if n.kind == "linear":
            rule = _rule_for(n, cfg, len(blocks))
            if rule.kind == "epsilon":
                keep_out.add(n.name)
            if _folds_bn(n, rule, cfg):
                canon.add(n.name)
    tr = _Trace()
    x = fast_layout(x.detach())  # channels-last on CPU: every conv of both passes runs in NHWC
    with torch.no_grad():
        logits = _forward(nodes, x, tr, keep_out, frozenset(canon))
        target = torch.as_tensor(target, device=x.device).long().view(-1)
        rows = torch.arange(x.shape[0], device=x.device)
        if initial_relevance is not None:
            init = torch.as_tensor(initial_relevance, device=x.device, dtype=logits.dtype).view(-1)
        elif cfg.init == "prob":
            init = class_probabilities(model, logits)[rows, target]
        else:
            init = logits[rows, target]
        r = torch.zeros_like(logits)
        r[rows, target] = 1.0 if unit_pass else init
    sums: dict[str, Tensor] | None = {"output": _per_sample_sum(r)} if record_sums else None
    p = _Pass(cfg, tr, len(blocks), blocks, sums, _input_node(nodes) if cfg.input_rule != "zplus" else None)
    r = p.run(nodes, r).detach().contiguous()
    nan = torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)
    checkpoints = {
        "input": _per_sample_sum(r),
        "first_block": p.checkpoints.get("first_block", nan),
        "last_block": p.checkpoints.get("last_block", nan),
    }
    if unit_pass:  # back to the initial relevance's scale (the rules are linear in R)
        r = r * init.detach().view(-1, *([1] * (r.ndim - 1)))
        scale = init.detach().double()
        checkpoints = {k: v * scale for k, v in checkpoints.items()}
        if sums is not None:
            sums = {k: v * scale for k, v in sums.items()}
    return LRPResult(r, init.detach(), logits.detach(), checkpoints, sums)
