"""``scripts/size_limits.py`` on a small tree of known sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "size_limits.py"


def _load():
    spec = importlib.util.spec_from_file_location("size_limits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(name: str, n_lines: int, reason: str = "") -> str:
    body = "".join(f"    x{k} = {k}\n" for k in range(n_lines - 1))
    return f"{reason}def {name}():\n{body}\n\n"


def test_long_files_and_functions_without_a_reason_are_listed(tmp_path):
    limits = _load()
    (tmp_path / "src").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "tests").mkdir()
    text = _function("short", 80) + _function("long", 81)
    text += _function("explained", 120, reason="# Long because of a reason.\n")
    (tmp_path / "src" / "a.py").write_text(text)
    (tmp_path / "tests" / "big.py").write_text("x = 1\n" * 401)
    (tmp_path / "scripts" / "tool").write_text("#!/usr/bin/env python\n" + _function("f", 90))
    (tmp_path / "scripts" / "notes").write_text("not python\n" * 500)
    assert limits.findings(tmp_path) == [
        "scripts/tool:2: f() 90 lines",
        "src/a.py:83: long() 81 lines",
        "tests/big.py: 401 lines",
    ]
