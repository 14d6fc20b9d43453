"""``scripts/dead_kernels.py`` on a small package of known reachability, and on ours."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("dead_kernels", REPO / "scripts/dead_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_reachability_follows_imports_attributes_and_calls(tmp_path):
    kernels = tmp_path / "src" / "promptcal" / "kernels"
    _write(kernels / "a.py", (
        "from promptcal.kernels.b import helper\n"
        "def used(x):\n    return helper(x) + inner(x)\n"
        "def inner(x):\n    return x\n"
        "def dead(x):\n    return used(x)\n"
        "def pixel(x):\n    return x\n"
    ))  # fmt: skip
    _write(kernels / "b.py", (
        "def helper(x):\n    return x\n"
        "def via_alias(x):\n    return x\n"
        "def only_tests(x):\n    return x\n"
    ))  # fmt: skip
    _write(tmp_path / "src" / "promptcal" / "pipeline" / "step.py", (
        "from promptcal.kernels import b as bk\n"
        "from promptcal.kernels.a import used\n"
        "def run(shard):\n    return used(bk.via_alias(shard.pixel))\n"
    ))  # fmt: skip
    _write(tmp_path / "tests" / "test_b.py", "from promptcal.kernels.b import only_tests\n")
    (tmp_path / "scripts").mkdir()
    assert _load().dead_kernels(tmp_path) == [("a", "dead"), ("a", "pixel"), ("b", "only_tests")]


def test_no_dead_kernel_in_the_package():
    assert _load().dead_kernels(REPO) == []
