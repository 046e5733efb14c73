"""Batched, exact LRP: trace the model into nodes, one recording forward, one relevance pass.

Supported architectures (checked once per model against ``model(x)``):

- sequential CNNs whose children, in registration order, are the forward order (torchvision
  VGG: ``features`` / ``avgpool`` / ``classifier``; ``nn.Sequential``; the tests' TinyCNN);
  a flatten is inserted before the first ``nn.Linear`` that meets a 4-d tensor;
- torchvision-style ResNets (``conv1 bn1 relu maxpool layer1..4 avgpool fc``) with
  torchvision ``BasicBlock`` / ``Bottleneck`` blocks (or any block with ``conv1 bn1 conv2 bn2
  [conv3 bn3] downsample``), including the zoo's ``sb_resnet``.

The forward pass is written here, not taken from the modules' ``forward``: blocks reuse one
``self.relu`` (in place) and add the skip in place, which would overwrite the activations we
record. ReLUs are applied functionally and merges out of place; parameters are only read.

Relevance flows (Otsuki et al. 2024, ECCV): softmax probability of the target class at its
logit (§4.1); each layer by the rule its :class:`~saliencybench.attributions.lrp.composites.Composite`
gives it (:mod:`~saliencybench.attributions.lrp.rules`); ReLU, and BatchNorm unless the
composite folds it (:mod:`~saliencybench.attributions.lrp.canonizers`), pass relevance unchanged
(§3.1); at each residual merge the composite's Relevance Splitting (Eq. 4 / 5, §4.3-4.4);
projection skips propagate with the same rules as the main branch.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencybench.attributions.lrp.canonizers import PASS_TYPES, foldable_bn, folded_params, folded_proxy
from saliencybench.attributions.lrp.composites import Composite, LRPConfig, composite_for
from saliencybench.attributions.lrp.rules import (
    LINEAR_TYPES,
    POOL_TYPES,
    UnsupportedPooling,
    WeightCache,
    all_finite,
    deferred_checks,
)
from saliencybench.core.outputs import class_probabilities
from saliencybench.core.tensors import exact_fp32, fast_layout


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

    Only the forward changes (BN still passes relevance unless the composite folds it); it
    saves one elementwise pass per BatchNorm. The folded node skips its BN node in the forward.
    """
    for a, b in zip(nodes, nodes[1:]):
        if a.kind == "linear" and b.kind == "pass" and foldable_bn(a.module, b.module):
            a.fold_bn = b.module
    for n in nodes:
        if n.kind == "block":
            _mark_bn_folds(n.main)
            if n.skip:
                _mark_bn_folds(n.skip)


@dataclass
class LRPResult:
    """Relevance at the input and the conservation checkpoints.

    ``checkpoints`` maps ``input`` / ``first_block`` / ``last_block`` (Otsuki et al. 2024 §5.5,
    Fig. 7) to per-sample relevance sums (B,) (NaN for models without residual blocks);
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


class _Forward:
    """Run the traced model, recording what the relevance pass reads. ``keep_out``: linear
    nodes whose output their rule reuses (their BN is applied separately unless the node is in
    ``canon``, where the rule itself sees the folded conv + BN, so the folded output is kept)."""

    def __init__(self, tr: _Trace, keep_out: set[str], canon: frozenset[str] = frozenset(),
                 fuse: dict[str, Tensor] | None = None) -> None:
        self.tr, self.keep_out, self.canon, self.fuse = tr, keep_out, canon, fuse or {}

    def run(self, nodes: list[Node], h: Tensor) -> Tensor:
        skip_bn: nn.Module | None = None
        for n in nodes:
            if skip_bn is not None and n.module is skip_bn:
                skip_bn = None
                continue
            h = self.STEPS[n.kind](self, n, h)
            if n.kind == "linear" and self._folds(n):
                skip_bn = n.fold_bn
        return h

    def _folds(self, n: Node) -> bool:
        return (n.fold_bn is not None and not n.fold_bn.training
                and (n.name not in self.keep_out or n.name in self.canon))

    def _linear(self, n: Node, h: Tensor) -> Tensor:
        if isinstance(n.module, nn.Linear) and h.ndim > 2:
            self.tr.shapes[n.name] = h.shape
            h = h.flatten(1)
        self.tr.inputs[n.name] = h
        m = n.module
        w, b = folded_params(m, n.fold_bn) if self._folds(n) else (m.weight, m.bias)
        if n.name in self.fuse:  # the layer and its rule's denominator in one convolution
            out = F.conv2d(h, *_fused_kernel(m, w, b, self.fuse[n.name]), m.stride, m.padding, m.dilation, m.groups)
            h, self.tr.outputs[n.name] = out[:, :w.shape[0]], out[:, w.shape[0]:]
            return h
        if self._folds(n):
            h = F.conv2d(h, w, b, m.stride, m.padding, m.dilation, m.groups)
        else:
            h = m(h)
        if n.name in self.keep_out:
            self.tr.outputs[n.name] = h
        return h

    def _pool(self, n: Node, h: Tensor) -> Tensor:
        self.tr.inputs[n.name] = h
        return n.module(h)

    def _relu(self, n: Node, h: Tensor) -> Tensor:
        return torch.relu(h)

    def _pass(self, n: Node, h: Tensor) -> Tensor:
        return n.module(h)

    def _flatten(self, n: Node, h: Tensor) -> Tensor:
        self.tr.shapes[n.name] = h.shape
        return h.flatten(1)

    def _block(self, n: Node, h: Tensor) -> Tensor:
        h_main = self.run(n.main, h)
        h_skip = h if n.skip is None else self.run(n.skip, h)
        self.tr.merges[n.name] = (h_skip, h_main)
        return torch.relu(h_skip + h_main)

    STEPS: dict[str, Callable[[Any, Node, Tensor], Tensor]] = {
        "linear": _linear, "pool": _pool, "relu": _relu, "pass": _pass, "flatten": _flatten, "block": _block,
    }


_FUSED = WeightCache()


def _fused_kernel(m: nn.Module, w: Tensor, b: Tensor | None, w_rule: Tensor) -> tuple[Tensor, Tensor | None]:
    """``[w; w_rule]`` and ``[b; 0]``: the layer's (folded) kernel stacked on its rule's, cached."""
    def build() -> tuple[Tensor, Tensor | None]:
        bias = None if b is None else torch.cat([b.detach(), torch.zeros_like(b).expand(w_rule.shape[0])])
        return torch.cat([w.detach(), w_rule]), bias

    return _FUSED.get(m, (w, b, w_rule), build)


_VERIFIED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def _verify_trace(model: nn.Module, nodes: list[Node], x: Tensor) -> None:
    """Check once per model that the traced forward reproduces ``model(x)`` (without TF32 on
    CUDA, whose rounding would exceed the tolerance: :func:`exact_fp32`)."""
    if _VERIFIED.get(model):
        return
    with torch.no_grad(), exact_fp32():
        ref = model(x[:1])
        ours = _Forward(_Trace(), set()).run(nodes, x[:1])
    if ref.shape != ours.shape or not torch.allclose(ref, ours, rtol=1e-4, atol=1e-5 * (1 + float(ref.abs().max()))):
        raise LRPUnsupportedModel(
            f"LRP's traced forward of {type(model).__name__} does not reproduce model(x): "
            "its forward is not the children in order (see saliencybench.attributions.lrp.engine)"
        )
    _VERIFIED[model] = True


# --------------------------------------------------------------------------- backward
def _per_sample_sum(r: Tensor) -> Tensor:
    return r.detach().flatten(1).sum(1, dtype=torch.float64)


class _Pass:
    """The relevance pass: every node hands relevance to its input by the composite's rules."""

    def __init__(self, comp: Composite, tr: _Trace, blocks: list[Node], sums: dict[str, Tensor] | None,
                 input_node: str | None = None) -> None:
        self.comp, self.tr, self.n_blocks, self.sums = comp, tr, len(blocks), sums
        self.input_node = input_node
        self.first = blocks[0].name if blocks else None
        self.last = blocks[-1].name if blocks else None
        self.checkpoints: dict[str, Tensor] = {}

    def _record(self, key: str, r: Tensor) -> None:
        if self.sums is not None:
            self.sums[key] = _per_sample_sum(r)

    def run(self, nodes: list[Node], r: Tensor) -> Tensor:
        for n in reversed(nodes):
            step = self.STEPS.get(n.kind)
            if step is not None:  # relu / pass (BatchNorm, dropout): relevance unchanged (§3.1)
                r = step(self, n, r)
            self._record(f"{n.name}.in", r)
        return r

    def _linear(self, n: Node, r: Tensor) -> Tensor:
        rule = self.comp.rule_for(n, self.n_blocks)
        # folded: conv + BN as one linear map (zennit's BN canonizer); BN then passes R
        module = folded_proxy(n.module, n.fold_bn) if self.comp.folds_bn(n.fold_bn, rule) else n.module
        h = self.tr.inputs[n.name]
        if n.name == self.input_node:
            r = self.comp.first.relevance(module, h, r)
        else:
            r = rule.relevance(module, h, r, self.tr.outputs.get(n.name))
        if n.name in self.tr.shapes:
            r = r.reshape(self.tr.shapes[n.name])
        return r

    def _pool(self, n: Node, r: Tensor) -> Tensor:
        try:
            return self.comp.pool_rule(n.module).relevance(n.module, self.tr.inputs[n.name], r)
        except UnsupportedPooling as e:
            raise LRPUnsupportedModel(f"'{n.name}': {e}") from None

    def _flatten(self, n: Node, r: Tensor) -> Tensor:
        return r.reshape(self.tr.shapes[n.name])

    def _block(self, n: Node, r: Tensor) -> Tensor:
        h_skip, h_main = self.tr.merges[n.name]
        self._record(f"{n.name}.out", r)
        r_skip, r_main = self.comp.split(r, h_skip, h_main, n.skip is None)
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

    STEPS: dict[str, Callable[[Any, Node, Tensor], Tensor]] = {
        "linear": _linear, "pool": _pool, "flatten": _flatten, "block": _block,
    }


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


def _traced(model: nn.Module, x: Tensor) -> list[Node]:
    """The model's nodes (traced once per model) after checking them against ``model(x)``."""
    nodes = _NODES.get(model)
    if nodes is None:
        nodes = trace_model(model)
        _NODES[model] = nodes
    _verify_trace(model, nodes, x)
    return nodes


def _outputs_to_keep(nodes: list[Node], comp: Composite, n_blocks: int, input_node: str | None,
                     fuse_kernels: bool) -> tuple[set[str], frozenset[str], dict[str, Tensor]]:
    """Linear nodes whose forward output their rule reuses, those whose rule sees conv + BN
    folded, and (with ``fuse_kernels``) the convolutions whose rule's denominator kernel runs
    stacked on the layer's own in the forward (one launch instead of two; on CUDA only: on the
    CPU the channel slices of a channels-last output cost more than the saved call, measured on
    ResNet50 at batch 1 / 64x64 and batch 8 / 224x224)."""
    keep_out, canon, fuse = set(), set(), {}
    stack = list(nodes)
    while stack:
        n = stack.pop()
        stack.extend(n.main + (n.skip or []))
        if n.kind == "linear":
            rule = comp.rule_for(n, n_blocks)
            if rule.needs_output:
                keep_out.add(n.name)
            if comp.folds_bn(n.fold_bn, rule):
                canon.add(n.name)
            elif fuse_kernels and n.name != input_node and isinstance(n.module, nn.Conv2d):
                kernel = rule.denominator_kernel(n.module)
                if kernel is not None:
                    fuse[n.name] = kernel
    return keep_out, frozenset(canon), fuse


def _initial_relevance(model: nn.Module, logits: Tensor, target: Tensor, init: str,
                       initial: Tensor | None, unit_pass: bool) -> tuple[Tensor, Tensor]:
    """The initial relevance (B,) and the relevance at the output (one-hot at the target:
    1 with ``unit_pass``, else the initial relevance)."""
    target = torch.as_tensor(target, device=logits.device).long().view(-1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    if initial is not None:
        start = torch.as_tensor(initial, device=logits.device, dtype=logits.dtype).view(-1)
    elif init == "prob":
        start = class_probabilities(model, logits)[rows, target]
    else:
        start = logits[rows, target]
    r = torch.zeros_like(logits)
    r[rows, target] = 1.0 if unit_pass else start
    return start, r


def lrp_relevance(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    config: LRPConfig | None = None,
    composite: Composite | None = None,
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
        composite: the rules to use instead of ``config``'s (``config.init`` still chooses
            the initial relevance); a new rule is a class in a composite.
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
    comp = composite if composite is not None else composite_for(cfg)
    nodes = _traced(model, x)
    blocks = iter_blocks(nodes)
    tr = _Trace()
    x = fast_layout(x.detach())  # channels-last on CPU: every conv of both passes runs in NHWC
    input_node = _input_node(nodes) if comp.first is not None else None
    with torch.no_grad():
        logits = _Forward(tr, *_outputs_to_keep(nodes, comp, len(blocks), input_node, x.is_cuda)).run(nodes, x)
        init, r = _initial_relevance(model, logits, target, cfg.init, initial_relevance, unit_pass)
    with deferred_checks() as checks:  # one host synchronisation for the whole pass
        p, r_in, sums = _relevance_pass(_Pass(comp, tr, blocks, None, input_node), nodes, r, record_sums)
    if not all_finite(checks):  # a zero denominator somewhere: rerun with the rules' exact fallbacks
        p, r_in, sums = _relevance_pass(_Pass(comp, tr, blocks, None, input_node), nodes, r, record_sums)
    return _result(p, r_in, init, logits, sums, unit_pass)


def _relevance_pass(p: _Pass, nodes: list[Node], r: Tensor, record_sums: bool
                    ) -> tuple[_Pass, Tensor, dict[str, Tensor] | None]:
    """Run the relevance pass from the output relevance ``r``; the per-node sums when asked."""
    p.sums = {"output": _per_sample_sum(r)} if record_sums else None
    return p, p.run(nodes, r).detach().contiguous(), p.sums


def _result(p: _Pass, r: Tensor, init: Tensor, logits: Tensor, sums: dict[str, Tensor] | None,
            unit_pass: bool) -> LRPResult:
    """The relevance and checkpoints, scaled back to the initial relevance with ``unit_pass``."""
    nan = torch.full((r.shape[0],), float("nan"), dtype=torch.float64, device=r.device)
    checkpoints = {"input": _per_sample_sum(r), "first_block": p.checkpoints.get("first_block", nan),
                   "last_block": p.checkpoints.get("last_block", nan)}
    if unit_pass:  # back to the initial relevance's scale (the rules are linear in R)
        r = r * init.detach().view(-1, *([1] * (r.ndim - 1)))
        scale = init.detach().double()
        checkpoints = {k: v * scale for k, v in checkpoints.items()}
        if sums is not None:
            sums = {k: v * scale for k, v in sums.items()}
    return LRPResult(r, init.detach(), logits.detach(), checkpoints, sums)
