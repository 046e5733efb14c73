"""One tree of the errors saliencybench raises on purpose, and what the CLI does with each.

::

    SaliencyBenchError
    ├── UsageError (ValueError)          bad input from the user: exit code 2, one line
    │   ├── RegistryError                unknown / duplicate names, missing optional dependency
    │   │   ├── UnknownNameError (KeyError), DuplicateNameError, MissingDependencyError (ImportError)
    │   │   └── ConfigError              a malformed suite file or option
    │   ├── WeightsError                 an unknown weights name for an architecture
    │   └── ResultsError                 a damaged or foreign results file (names file and line)
    ├── SetupError (RuntimeError)        something the user must provide is missing: exit code 1
    │   ├── DataRootError, CheckpointError, GridSelectionError
    ├── NotApplicableError               a method that does not apply to a model (no rows)
    ├── ModelMutationError (RuntimeError) a method or metric changed the model in place
    └── PrecomputedAttributionError (RuntimeError)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class SaliencyBenchError(Exception):
    """Base class of every error saliencybench raises on purpose."""


class UsageError(SaliencyBenchError, ValueError):
    """A usage error: bad names, options or input files. The CLI prints one line, exit code 2."""


class RegistryError(UsageError):
    """Base class of registry errors (usage errors: the CLI exits with code 2)."""


class UnknownNameError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(RegistryError):
    pass


class MissingDependencyError(RegistryError, ImportError):
    """A name needs an optional dependency that is not installed (a usage error: exit code 2)."""


class ConfigError(RegistryError):
    """A malformed or inconsistent suite configuration (exit code 2)."""


class WeightsError(UsageError):
    """An unknown weights name for an architecture."""


class ResultsError(UsageError):
    """A results file that is damaged (cut mid-line, missing columns, fewer samples than its
    manifest says) or not a results file at all. The message names the file and the line."""


class SetupError(SaliencyBenchError, RuntimeError):
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


class CheckpointError(SetupError):
    """A shipped or user checkpoint is missing, unreadable, or does not fit the model."""


class GridSelectionError(SetupError):
    """Too few images reach the confidence threshold and lowering it is not allowed."""


class NotApplicableError(SaliencyBenchError):
    """Raised by a method that does not apply to a model (e.g. ``lrp_resnet`` on a VGG).

    The runner writes no rows for that (method, model) pair, so its leaderboard cells stay
    empty instead of showing an error.
    """


class ModelMutationError(SaliencyBenchError, RuntimeError):
    """A method or metric changed the model's weights or buffers in place."""


class PrecomputedAttributionError(SaliencyBenchError, RuntimeError):
    """Precomputed maps cannot be recomputed at other inputs (what MIA would need)."""
