"""saliencybench: an evaluation benchmark suite for image attribution methods.

>>> import saliencybench as sb
>>> sb.list_methods("grad*")          # doctest: +SKIP
>>> model = sb.create_model("sb_resnet")  # doctest: +SKIP
>>> scores = sb.evaluate(model, x, y, methods=["saliency"], metrics=["insertion"])  # doctest: +SKIP
>>> print(sb.leaderboard(scores))  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from saliencybench.core.registry import (
    DATASETS,
    METHODS,
    METRICS,
    MODELS,
    load_plugin,
    register_dataset,
    register_method,
    register_metric,
    register_model,
    set_builtin_loader,
)


def _import_builtins() -> None:
    """Import the four packages whose ``__init__`` imports every registering module."""
    import saliencybench.attributions  # noqa: F401
    import saliencybench.datasets  # noqa: F401
    import saliencybench.metrics  # noqa: F401
    import saliencybench.models  # noqa: F401


# Registries fill on first lookup, so `import saliencybench` stays light (no torch) for the CLI.
set_builtin_loader(_import_builtins)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def list_metrics(pattern: str = "*") -> list[str]:
    return METRICS.names(pattern)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def create_model(name: str, **kw):
    """Build a registered model (eval mode), like ``timm.create_model``."""
    return MODELS.get(name).obj(**kw)


def load_dataset(name: str, **kw):
    """Build a registered dataset's :class:`~saliencybench.core.types.SampleSet`."""
    return DATASETS.get(name).obj(**kw)


def attribute(method: str, model, x, target, **params):
    """Compute a registered method's (B,1,H,W) attribution (see ``compute_attribution``)."""
    from saliencybench.attributions.base import compute_attribution

    return compute_attribution(method, model, x, target, params=params)


def __getattr__(name: str):
    # evaluate / leaderboard (saliencybench/api.py) load torch and pandas: imported on first use,
    # so that `import saliencybench` stays light for plugins and the CLI
    if name in ("evaluate", "leaderboard"):
        from saliencybench import api

        return getattr(api, name)
    raise AttributeError(f"module 'saliencybench' has no attribute {name!r}")


__all__ = [
    "DATASETS", "METHODS", "METRICS", "MODELS", "attribute", "create_model", "evaluate", "leaderboard",
    "list_datasets", "list_methods", "list_metrics", "list_models", "load_dataset", "load_plugin",
    "register_dataset", "register_method", "register_metric", "register_model",
]
