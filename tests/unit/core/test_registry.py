"""Registries: registration, duplicates, suggestions, wildcards, plugins, and the shipped suites."""

from __future__ import annotations

import pytest

from saliencybench.benchmark.config import list_suites, load_config
from saliencybench.benchmark.runner import resolve_suite
from saliencybench.core.registry import (
    METHODS,
    METRICS,
    MODELS,
    DuplicateNameError,
    Registry,
    UnknownNameError,
    load_plugin,
    populate,
    register_method,
)


def test_every_registering_module_is_imported_by_its_package():
    """Registration is explicit (each package's ``__init__`` imports its modules): a module with
    ``@register_*`` decorators that its package forgets would silently register nothing."""
    import re
    import sys
    from pathlib import Path

    import saliencybench

    populate()
    root = Path(saliencybench.__file__).parent
    missing = []
    for pkg in ("attributions", "metrics", "datasets", "models"):
        for f in sorted((root / pkg).rglob("*.py")):
            if re.search(r"^\s*@?register_(method|metric|dataset|model)\(", f.read_text(), re.M):
                name = ".".join(f.relative_to(root.parent).with_suffix("").parts)
                if name not in sys.modules:
                    missing.append(name)
    assert missing == []


def test_duplicate_and_unknown_names():
    reg: Registry = Registry("widget")
    reg.add("alpha_one", object())
    with pytest.raises(DuplicateNameError, match="already registered"):
        reg.add("alpha_one", object())
    with pytest.raises(UnknownNameError, match="did you mean 'alpha_one'"):
        reg.get("alpha_onw")
    with pytest.raises(UnknownNameError, match="no widget matches 'z\\*'"):
        reg.resolve("z*")


def test_wildcards_and_comma_lists():
    reg: Registry = Registry("widget")
    for n in ("gradcam", "gradcam_pp", "saliency", "lrp_a", "lrp_b"):
        reg.add(n, object())
    assert reg.names("grad*") == ["gradcam", "gradcam_pp"]
    assert reg.resolve("saliency, lrp*,gradcam") == ["saliency", "lrp_a", "lrp_b", "gradcam"]
    assert reg.names(["lrp_a", "sal*"]) == ["lrp_a", "saliency"]


def test_builtin_methods_and_metrics_carry_metadata():
    populate()
    for e in METHODS:
        assert e.meta["family"], e.name
        assert isinstance(e.meta["postprocess"], tuple), e.name
    for e in METRICS:
        assert isinstance(e.meta["higher_is_better"], bool), e.name
    for name in ("saliency", "ixg", "integrated_gradients", "guided_backprop", "gradcam", "random"):
        assert name in METHODS
    for name in ("insertion", "deletion", "id_score"):
        assert name in METRICS


def test_plugin_registers_from_file(tmp_path):
    p = tmp_path / "plug_reg_test.py"
    p.write_text("from saliencybench import register_method\n"
                 "@register_method('plugin_reg_test_m', family='plugin')\n"
                 "def f(model, x, target, **kw):\n    return x\n")
    assert load_plugin(p) == ["plugin_reg_test_m"]
    assert METHODS.get("plugin_reg_test_m").meta["family"] == "plugin"
    with pytest.raises(Exception, match="plugin file not found"):
        load_plugin(tmp_path / "missing.py")


def test_register_method_fn_variant_shares_implementation():
    def impl(model, x, target, **kw):
        return x

    register_method("variant_a_test", family="gradient")(impl)
    register_method("variant_b_test", family="gradient", postprocess=("abs_sum",))(impl)
    assert METHODS.get("variant_a_test").obj is METHODS.get("variant_b_test").obj


@pytest.mark.parametrize("suite", sorted(list_suites()))
def test_every_shipped_suite_resolves(suite):
    cfg = load_config(list_suites()[suite])
    resolved = resolve_suite(cfg)
    assert resolved.methods and resolved.metrics and resolved.models
    for spec in resolved.models:
        assert spec.split(":")[0] in MODELS
