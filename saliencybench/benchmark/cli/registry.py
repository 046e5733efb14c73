"""``saliencybench list``: registered methods, metrics, datasets, models and shipped suites."""

from __future__ import annotations

import argparse
import fnmatch
import sys
import textwrap

from saliencybench.benchmark.cli.run import load_plugins
from saliencybench.core.errors import UsageError


def cmd_list(args: argparse.Namespace) -> int:
    from saliencybench.benchmark.config import list_suites, load_config
    from saliencybench.core.registry import DATASETS, METHODS, METRICS, MODELS

    load_plugins(args.plugin)
    if args.what == "suites":
        for name, path in list_suites().items():
            if fnmatch.fnmatchcase(name, args.pattern):
                try:
                    desc = load_config(path).description
                except Exception as e:
                    desc = f"(invalid: {e})"
                print(f"{name:<28} {desc}")
        return 0
    reg = {"methods": METHODS, "metrics": METRICS, "datasets": DATASETS, "models": MODELS}[args.what]
    if args.what == "models" and _list_prefixed(MODELS, args.pattern):
        return 0
    names = reg.names(args.pattern)
    families = [p for name, p in sorted(reg.prefixes.items()) if fnmatch.fnmatchcase(f"{name}:<name>", args.pattern)]
    if not names and not families:
        print(f"no {args.what} match '{args.pattern}'", file=sys.stderr)
        return 1
    for n in names:
        info, desc = _describe(args.what, reg.get(n).meta)
        line = f"{n:<28} {info}"
        if desc:
            line += f" — {textwrap.shorten(desc, 90)}"
        print(line)
    for fam in families:  # one line per prefix (timm:<name>), never the thousands of names behind it
        print(f"{fam.prefix + ':<name>':<28} {fam.describe()}")
    return 0


def _describe(what: str, meta: dict) -> tuple[str, str]:
    """The info column and the description of one registered name in ``list``."""
    if what == "methods":
        info = f"[{meta.get('family', '')}] {meta.get('paper', '')}".strip()
        return info, meta.get("description") or meta.get("description_doc", "")
    if what == "metrics":
        return ("↑ higher is better" if meta.get("higher_is_better") else "↓ lower is better"), \
            meta.get("description", "")
    if what == "models":
        acc = meta.get("accuracy")
        info = f"dataset={meta.get('dataset', '?')}"
        if isinstance(acc, (int, float)):
            info += f" held-out accuracy={acc:.3f}"
        return info, meta.get("description", "")
    return _describe_dataset(meta)


def _describe_dataset(meta: dict) -> tuple[str, str]:
    """Classes, masks, default split and where a real dataset's root comes from."""
    parts = [f"[{meta['kind']}]"] if meta.get("kind") else []
    if meta.get("num_classes"):
        parts.append(f"{meta['num_classes']} classes")
    if meta.get("has_mask"):
        parts.append("masks")
    if meta.get("default_split"):
        parts.append(f"split={meta['default_split']}")
    if meta.get("env_var"):
        parts.append(f"root=${meta['env_var']}")
    return " ".join(parts), meta.get("description") or meta.get("paper", "")


def _list_prefixed(reg, pattern: str) -> bool:
    """``list models 'timm:resnet*'``: the names behind a prefix that match (True when printed);
    False if ``pattern`` does not start with a registered prefix."""
    prefix = reg.prefix_of(pattern)
    if prefix is None:
        return False
    fam = reg.prefixes[prefix]
    rest = pattern[len(prefix) + 1:] or "*"
    if not any(ch in rest for ch in "*?["):
        print(reg.get(pattern).name)  # a literal name: it exists, or an error with a suggestion
        return True
    if fam.names is None:
        return False
    names = fam.names(rest)
    if not names:
        raise UsageError(f"no {prefix} model matches '{rest}'")
    for n in names:
        print(f"{prefix}:{n}")
    return True
