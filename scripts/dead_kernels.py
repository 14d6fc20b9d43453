#!/usr/bin/env python
"""List the kernel functions that no production code reaches.

Roots are the names code outside ``src/promptcal/kernels/`` (``src/``, ``scripts/``)
imports from a kernel module (``from promptcal.kernels.X import f``) or reads as an
attribute of one (``from promptcal.kernels import X as xk; xk.f``). From them the walk
follows the names each reached kernel function refers to, through the kernel modules'
own imports. Names are matched per module, so a common word elsewhere (``pixel``)
cannot keep a kernel alive. Tests are not roots: a kernel only tests call is dead.

Usage: ``python scripts/dead_kernels.py [ROOT]``; prints ``module function`` per dead
function and exits 1 when there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "promptcal.kernels"


def _kernel_definitions(kernels: Path) -> tuple[dict, dict]:
    """``(module, name) -> node`` of top-level definitions, and each module's imports."""
    defs: dict[tuple[str, str], ast.AST] = {}
    imports: dict[str, dict[str, tuple[str, str]]] = {}
    for path in sorted(kernels.glob("*.py")):
        module = path.stem
        imports[module] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                defs[(module, node.name)] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        defs[(module, target.id)] = node
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                source = node.module.rsplit(".", 1)[-1]
                for alias in node.names:
                    imports[module][alias.asname or alias.name] = (source, alias.name)
    return defs, imports


def _roots(files: list[Path]) -> set[tuple[str, str]]:
    """Kernel names that the given (non-kernel) files import or read off a module."""
    roots = set()
    for path in files:
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.startswith(PACKAGE + "."):
                roots |= {(node.module.rsplit(".", 1)[-1], a.name) for a in node.names}
            elif node.module == PACKAGE:
                aliases |= {a.asname or a.name: a.name for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in aliases:
                    roots.add((aliases[node.value.id], node.attr))
    return roots


def dead_kernels(root: Path) -> list[tuple[str, str]]:
    """``(module, function)`` of every kernel function production code cannot reach."""
    kernels = root / "src" / "promptcal" / "kernels"
    defs, imports = _kernel_definitions(kernels)
    files = [p for p in (root / "src").rglob("*.py") if kernels not in p.parents]
    files += list((root / "scripts").rglob("*.py"))
    todo = [key for key in _roots(files) if key in defs]
    reached: set[tuple[str, str]] = set()
    while todo:
        key = todo.pop()
        if key in reached:
            continue
        reached.add(key)
        module = key[0]
        for node in ast.walk(defs[key]):
            if isinstance(node, ast.Name):
                ref = imports[module].get(node.id, (module, node.id))
                if ref in defs and ref not in reached:
                    todo.append(ref)
    return sorted(
        key
        for key, node in defs.items()
        if key not in reached and isinstance(node, ast.FunctionDef)
    )


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    dead = dead_kernels(root)
    print("\n".join(f"{module} {name}" for module, name in dead))
    return 1 if dead else 0


if __name__ == "__main__":
    sys.exit(main())
