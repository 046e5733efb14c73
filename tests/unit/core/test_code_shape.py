"""Code shape limits of the package: no function over 60 lines, none with more than 8 parameters.

Declarative tables are the exception (the argparse parser is a table of options); they are named
in ``TABLES``. Lines count from ``def`` to the last line of the body, docstring included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import saliencybench

ROOT = Path(saliencybench.__file__).resolve().parent
MAX_LINES = 60
MAX_PARAMS = 8
TABLES = {"build_parser"}


def functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}", node))
    return out


def n_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


def test_no_function_over_60_lines() -> None:
    long = [f"{where} ({fn.end_lineno - fn.lineno + 1} lines)" for where, fn in functions()
            if fn.name not in TABLES and fn.end_lineno - fn.lineno + 1 > MAX_LINES]
    assert long == []


def test_no_function_with_more_than_8_parameters() -> None:
    wide = [f"{where} ({n_params(fn)} parameters)" for where, fn in functions() if n_params(fn) > MAX_PARAMS]
    assert wide == []
