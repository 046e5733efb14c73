"""Where real datasets live on disk, and the error raised when they are not there.

Every real dataset (ImageNet, CUB-200-2011, CIFAR) finds its root the same way: the
``root=`` argument, else an environment variable (``SALIENCYBENCH_IMAGENET``, ...), else
``~/data/<name>``. When a file the loader needs is missing or unreadable it raises
:class:`DataRootError`, whose message says which file was expected where and what would fix
it; the CLI turns it into exit code 1 with that one message.
"""

from __future__ import annotations

import os
from pathlib import Path

from saliencybench.core.errors import DataRootError, SetupError  # noqa: F401


def default_root(name: str, env_var: str) -> Path:
    """The root used when none is given: ``$<env_var>`` if set, else ``~/data/<name>``."""
    value = os.environ.get(env_var, "").strip()
    if value:
        return Path(value).expanduser()
    return Path("~/data").expanduser() / name


def resolve_root(root: str | Path | None, name: str, env_var: str) -> Path:
    """``root`` expanded (``~`` and environment variables), or :func:`default_root`."""
    if root is None or str(root).strip() == "":
        return default_root(name, env_var)
    return Path(os.path.expandvars(str(root))).expanduser()


def require_dir(dataset: str, root: Path, env_var: str, fix: str) -> None:
    """Raise :class:`DataRootError` unless ``root`` is an existing directory."""
    if not root.is_dir():
        raise DataRootError(
            dataset, root,
            f"data root {root} does not exist or is not a directory "
            f"(pass root=... or set {env_var})",
            fix=fix,
        )
