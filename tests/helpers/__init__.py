"""Test helpers: toy registrations, small models, fake real-data trees, plugin files.

Importable as ``helpers`` because pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in
pyproject.toml). Subprocesses that load a plugin from here get the same path through
:func:`subprocess_env`.
"""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
PLUGINS = TESTS / "helpers" / "plugins"
TOY_PLUGIN = str(PLUGINS / "toy_plugin.py")
SLOW_PLUGIN = str(PLUGINS / "slow_plugin.py")


def subprocess_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``tests/`` on ``PYTHONPATH``, so that a
    ``saliencybench`` subprocess can import the plugins' ``helpers`` package."""
    env = dict(os.environ if base is None else base)
    parts = [str(TESTS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.update(extra)
    return env
