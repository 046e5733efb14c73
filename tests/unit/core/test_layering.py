"""The package's layering: ``core`` at the bottom, the harness (``benchmark``) on top.

Walks the imports of every module (top-level and inside functions) and fails on a back edge:
``core`` imports nothing else of the package; ``attributions``, ``metrics``, ``datasets``,
``models`` and ``training`` never import the harness (``benchmark``) or the notebook API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import saliencybench

ROOT = Path(saliencybench.__file__).resolve().parent
LIBRARY = ("attributions", "metrics", "datasets", "models", "training")
HARNESS = ("saliencybench.benchmark", "saliencybench.api")


def imported_modules(path: Path) -> set[str]:
    """Every ``saliencybench...`` module a file imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if m == "saliencybench" or m.startswith("saliencybench.")}


def package_modules(sub: str) -> list[Path]:
    return sorted((ROOT / sub).rglob("*.py")) if (ROOT / sub).is_dir() else []


def _is_under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def _shortest(mods: list[str]) -> list[str]:
    """``a.b`` for ``a.b`` and ``a.b.name`` (a name imported from a module is not a module)."""
    return sorted(m for m in mods if not any(m != o and _is_under(m, o) for o in mods))


@pytest.mark.parametrize("path", package_modules("core"), ids=lambda p: p.name)
def test_core_imports_nothing_else_of_the_package(path: Path) -> None:
    bad = _shortest([m for m in imported_modules(path) if not _is_under(m, "saliencybench.core")])
    assert bad == [], f"{path.relative_to(ROOT.parent)} imports {bad}"


@pytest.mark.parametrize("path", [p for sub in LIBRARY for p in package_modules(sub)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_library_packages_never_import_the_harness(path: Path) -> None:
    bad = _shortest([m for m in imported_modules(path) if any(_is_under(m, h) for h in HARNESS)])
    assert bad == [], f"{path.relative_to(ROOT.parent)} imports {bad}"


def test_the_walk_sees_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: an import inside a function body counts as much as a top-level one."""
    f = ROOT / "core" / "__init__.py"
    assert imported_modules(f) == set()
    probe = ROOT / "core" / "_layering_probe.py"
    try:
        probe.write_text("def f():\n    from saliencybench.benchmark import runner\n")
        assert "saliencybench.benchmark.runner" in imported_modules(probe)
    finally:
        probe.unlink()
