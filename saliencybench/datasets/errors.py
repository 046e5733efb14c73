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
from typing import Sequence


class SetupError(RuntimeError):
    """Something the user has to provide (data, weights, a checkpoint) is missing or broken.

    The CLI reports these with their message and exit code 1, without a traceback.
    """


class DataRootError(SetupError):
    """A dataset root is missing or malformed.

    Attributes:
        dataset: registry name of the dataset.
        root: the directory that was searched.
        expected: the paths (relative to ``root`` or absolute) that were expected.
        fix: what would fix it (a command, URL or instruction).
    """

    def __init__(self, dataset: str, root: str | Path, problem: str, *,
                 expected: Sequence[str] = (), fix: str = "") -> None:
        self.dataset = dataset
        self.root = str(root)
        self.expected = list(expected)
        self.fix = fix
        msg = f"{dataset}: {problem}"
        if self.expected:
            shown = ", ".join(self.expected[:4]) + (" ..." if len(self.expected) > 4 else "")
            msg += f" (expected {shown} in {self.root})"
        if fix:
            msg += f"; {fix}"
        super().__init__(msg)


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
