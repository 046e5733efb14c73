"""Registry-wide tests, parametrized over EVERY registered method (methods registered later,
e.g. the LRP family, are picked up automatically).

For each method and each of two small models (TinyCNN; a tiny ResNet with BN, max-pool,
projection and identity skips and reused ReLU modules): output shape and finiteness,
a batch of 8 equals 8 single calls, same seed gives the same map, and the model is left
unchanged (values, hooks, requires_grad, train/eval mode, grads), also when the method raises.
"""

from __future__ import annotations

import pytest
import torch

from helpers.methods import FAST, assert_same_state, builtin_methods, model_state, tiny_resnet
from saliencybench.attributions.base import compute_attribution, method_params
from saliencybench.core.errors import NotApplicableError
from saliencybench.core.registry import METHODS

ALL = builtin_methods()


def _model(kind: str):
    if kind == "tiny":
        from helpers.models import TinyCNN

        torch.manual_seed(0)
        return TinyCNN().eval()
    return tiny_resnet()


def _inputs(n: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 5


def _call(name, model, x, t, seeds=None):
    try:
        return compute_attribution(name, model, x, t, params=FAST.get(name), seeds=seeds)
    except NotApplicableError as e:  # e.g. LRP for ResNet on a network without residual blocks
        pytest.skip(f"{name} does not apply to this model: {e}")


@pytest.mark.parametrize("kind", ["tiny", "resnet"])
@pytest.mark.parametrize("name", ALL)
def test_shape_finite_and_batch_equals_single_calls(name: str, kind: str) -> None:
    model = _model(kind)
    x, t = _inputs(8)
    if METHODS.get(name).meta["family"] == "lrp":
        # LRP's z+ denominators can be near zero on random-init nets, which amplifies float32
        # rounding differences between batched and single convolutions (~1e-3 relative), and
        # heat quantization can move a value across a bin edge. In float64 the batching logic
        # itself is checked to the tolerance below.
        model, x = model.double(), x.double()
    seeds = list(range(100, 108))
    batch = _call(name, model, x, t, seeds)
    assert batch.shape == (8, 1, 32, 32)
    assert batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    single = torch.cat([_call(name, model, x[i:i + 1], t[i:i + 1], seeds[i:i + 1]) for i in range(8)])
    scale = batch.abs().amax().clamp(min=1e-12)
    assert torch.allclose(single, batch, rtol=1e-4, atol=1e-5 * float(scale)), (
        f"max diff {(single - batch).abs().max().item():.3g} vs scale {scale.item():.3g}")


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_map(name: str) -> None:
    model = _model("resnet")
    x, t = _inputs(3)
    a = _call(name, model, x, t, [7, 8, 9])
    b = _call(name, model, x, t, [7, 8, 9])
    assert torch.equal(a, b)
    if METHODS.get(name).meta.get("stochastic"):
        c = _call(name, model, x, t, [17, 18, 19])
        assert not torch.equal(a, c), "a stochastic method ignored its seeds"


@pytest.mark.parametrize("kind", ["tiny", "resnet"])
@pytest.mark.parametrize("name", ALL)
def test_model_unchanged_without_the_guard(name: str, kind: str) -> None:
    """Calls the raw function (no model_guard), so leftovers cannot be hidden by the guard."""
    x, t = _inputs(2)
    _call_raw_and_check_model(name, _model(kind), x, t, (NotApplicableError,))  # refusing is fine


def _call_raw_and_check_model(name: str, model, x, t, allowed: tuple[type[Exception], ...]) -> None:
    """Call the method's raw function (no guard); the model must be untouched afterwards."""
    entry = METHODS.get(name)
    kw = method_params(entry, FAST.get(name))
    if entry.meta.get("stochastic"):
        kw["seeds"] = [1, 2]
    before = model_state(model)
    try:
        with torch.enable_grad():
            entry.obj(model, x, t, **kw)
    except allowed:
        pass
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("name", ALL)
def test_model_unchanged_when_the_method_raises(name: str) -> None:
    x, _ = _inputs(2)
    bad_target = torch.tensor([0, 999])  # out of range: raises inside the method
    _call_raw_and_check_model(name, _model("resnet"), x, bad_target,
                              (IndexError, RuntimeError, ValueError, NotApplicableError))


def test_every_method_has_metadata() -> None:
    for entry in (METHODS.get(n) for n in ALL):
        assert entry.meta["family"], entry.name
        assert entry.meta["paper"], entry.name
        assert isinstance(entry.meta["postprocess"], tuple), entry.name


def test_variants_share_one_implementation() -> None:
    assert METHODS.get("s_ixg").obj is METHODS.get("ixg").obj
    assert METHODS.get("s_intgrad").obj is METHODS.get("integrated_gradients").obj
    assert METHODS.get("dga_w").obj is METHODS.get("dga").obj is METHODS.get("dga_e").obj
    assert METHODS.get("integrated_gradients").meta["conservation"] == "completeness"
    assert METHODS.get("deeplift").meta["conservation"] == "completeness"
