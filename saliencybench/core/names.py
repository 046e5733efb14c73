"""The one "did you mean" helper behind every unknown-name message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``choices`` that look like ``name`` (difflib ratio >= ``cutoff``)."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.6,
                 quote: bool = True) -> str:
    """``"; did you mean 'a', 'b'?"`` for the close matches of ``name``, or ``""`` when none."""
    close = close_matches(name, choices, n=n, cutoff=cutoff)
    if not close:
        return ""
    shown = ", ".join(repr(c) if quote else c for c in close)
    return f"; did you mean {shown}?"
