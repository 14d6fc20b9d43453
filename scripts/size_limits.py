#!/usr/bin/env python
"""List the files over 400 lines and the functions over 80 lines without a reason.

The project's size rules (``../shared/spec/design.md``): no source, test or script
file over 400 lines, no function over 80 lines unless a comment right above it (above
its decorators) says why. Functions are measured from ``def`` to their last line.

Usage: ``python scripts/size_limits.py [ROOT]``; prints one line per finding and exits
1 when there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def python_files(root: Path) -> list[Path]:
    """The ``.py`` files of ``src/``, ``tests/`` and ``scripts/``, and the scripts without
    a suffix that start with a Python shebang."""
    files = [p for d in ("src", "tests", "scripts") for p in (root / d).rglob("*.py")]
    for path in (root / "scripts").glob("*"):
        if path.is_file() and not path.suffix:
            with path.open("rb") as handle:
                if handle.readline().startswith(b"#!/usr/bin/env python"):
                    files.append(path)
    return sorted(files)


def has_reason(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a comment line sits right above the function (or its decorators)."""
    first = min([d.lineno for d in node.decorator_list] + [node.lineno])
    above = lines[first - 2].lstrip() if first >= 2 else ""
    return above.startswith("#") and not above.startswith("#!")  # a shebang is no reason


def findings(root: Path) -> list[str]:
    """One line per file or function over its limit."""
    out = []
    for path in python_files(root):
        text = path.read_text()
        lines = text.splitlines()
        name = path.relative_to(root)
        if len(lines) > MAX_FILE_LINES:
            out.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and not has_reason(lines, node):
                    out.append(f"{name}:{node.lineno}: {node.name}() {length} lines")
    return out


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    found = findings(root)
    print("\n".join(found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
