"""Command-line interface: ``saliencybench run | list | leaderboard | compare | check-regression |
accept | merge | train``.

Exit codes: 0 success, 1 runtime failure, 2 usage error (bad arguments, unknown names,
malformed config, damaged results files), 130 interrupted (the same command resumes).

The parser is a declarative table (:mod:`.parser`); each group of commands has its module:
:mod:`.run` (run), :mod:`.results` (leaderboard, compare, check-regression, accept, merge),
:mod:`.registry` (list), :mod:`.train` (train).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from saliencybench.benchmark.cli.parser import build_parser
from saliencybench.benchmark.cli.registry import cmd_list
from saliencybench.benchmark.cli.results import (
    cmd_accept,
    cmd_check_regression,
    cmd_compare,
    cmd_leaderboard,
    cmd_merge,
)
from saliencybench.benchmark.cli.run import cmd_run
from saliencybench.benchmark.cli.train import cmd_train
from saliencybench.core.errors import UsageError

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {
    "run": cmd_run, "list": cmd_list, "leaderboard": cmd_leaderboard, "compare": cmd_compare,
    "check-regression": cmd_check_regression, "accept": cmd_accept, "merge": cmd_merge, "train": cmd_train,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import saliencybench

        print(saliencybench.__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    debug = os.environ.get("SALIENCYBENCH_DEBUG") == "1"
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished parts are saved; run the same command again to resume", file=sys.stderr)
        return 130
    except UsageError as e:
        if debug:
            raise
        print(f"saliencybench: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"saliencybench: {type(e).__name__}: {msg} (set SALIENCYBENCH_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
