"""The package's import structure: no module imports itself through others (no cycles).

The layer order itself (commands → … → kernels) is the import-linter contract in
``pyproject.toml``, run by ``scripts/test``; this test adds what a layers contract does
not check: cycles between modules of the same layer, lazy (function-level) imports
included.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import promptcal

PACKAGE = Path(promptcal.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the promptcal modules it imports anywhere in its source."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    targets.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        # A package's __init__ is imported with any of its modules; that is not a cycle.
        graph[name] = {t for t in targets if t in modules and not name.startswith(t + ".")}
    return graph


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    # commands.calibrate imports the QA plots inside a function (matplotlib is slow).
    assert "promptcal.qa.plots" in graph["promptcal.commands.calibrate"]


def test_no_import_cycles():
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' → '.join(error.args[1])}")
