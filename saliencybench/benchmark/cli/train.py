"""``saliencybench train``: the default zoo on the embedded data, or a recipe on real data."""

from __future__ import annotations

import argparse

from saliencybench.core.errors import UsageError


def cmd_train(args: argparse.Namespace) -> int:
    from saliencybench.core.registry import MODELS
    from saliencybench.training.recipes import RECIPES, run_recipe

    kw = {"seed": args.seed}
    if args.model in RECIPES:
        for k in ("epochs", "out", "root"):
            if getattr(args, k) is not None:
                kw[k] = getattr(args, k)
        if args.arch:
            kw["model"] = args.arch
        kw["device"] = _device(args.device)
        res = run_recipe(args.model, **kw)
        print(", ".join(f"{k}={v}" for k, v in res.items() if not isinstance(v, (list, dict))))
        return 0
    if args.model not in MODELS:
        raise UsageError(f"'{args.model}' is neither a default-zoo model nor a recipe "
                         f"({', '.join(sorted(RECIPES))})")
    from saliencybench.training.recipes import train_model

    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.out:
        kw["out"] = args.out
    kw["device"] = _device(args.device)
    res = train_model(args.model, **kw)
    print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return 0


def _device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other names unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
