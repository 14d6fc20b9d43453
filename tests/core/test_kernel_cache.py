"""The kernel manifest: recording what a run used, and preloading it in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numba
import numpy as np

from promptcal.core.kernel_cache import (
    called_by_kernels,
    kernel_dispatchers,
    preload_kernels,
    record_used_kernels,
    used_kernels,
)
from promptcal.kernels.maskops import any_bits_set

KERNEL = "maskops.any_bits_set"

#: In a new process: preload from the manifest given as argv[1], then report which
#: kernels have compiled code, before any kernel was called.
PRELOAD_CHILD = """
import json, sys
from promptcal.core.kernel_cache import kernel_dispatchers, preload_kernels
count = preload_kernels(sys.argv[1])
loaded = {n: [str(s) for s in d.signatures]
          for n, d in kernel_dispatchers().items() if d.signatures}
print(json.dumps({"count": count, "loaded": loaded}))
"""


def _signature() -> str:
    any_bits_set(np.zeros((3, 4), np.int32), np.int32(4))  # compiled (and cached) here
    return str(kernel_dispatchers()[KERNEL].signatures[0])


def _preload_in_new_process(manifest) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PRELOAD_CHILD, str(manifest)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_manifest(path, kernels, version=numba.__version__):
    path.write_text(json.dumps({"numba": version, "kernels": kernels}))


def test_a_new_process_has_the_manifests_kernels_before_calling_them(tmp_path):
    signature = _signature()
    manifest = tmp_path / "manifest.json"
    _write_manifest(manifest, {KERNEL: [signature]})
    child = _preload_in_new_process(manifest)
    assert child["count"] == 1
    assert child["loaded"] == {KERNEL: [signature]}  # that one, and nothing else


def test_unusable_manifests_preload_nothing(tmp_path):
    signature = _signature()
    assert preload_kernels(tmp_path / "missing.json") == 0
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert preload_kernels(garbage) == 0
    cases = {
        "other_numba.json": ({KERNEL: [signature]}, "0.0.1"),
        "unknown_kernel.json": ({"maskops.no_such_kernel": [signature]}, numba.__version__),
        "unknown_signature.json": ({KERNEL: ["(float16,)"]}, numba.__version__),
    }
    for name, (kernels, version) in cases.items():
        _write_manifest(tmp_path / name, kernels, version)
        assert _preload_in_new_process(tmp_path / name) == {"count": 0, "loaded": {}}, name


def test_record_adds_this_process_kernels_to_the_manifest(tmp_path):
    signature = _signature()
    manifest = tmp_path / "cache" / "manifest.json"
    assert record_used_kernels(manifest)
    first = json.loads(manifest.read_text())
    assert first["numba"] == numba.__version__
    assert signature in first["kernels"][KERNEL]
    assert first["kernels"] == used_kernels()
    assert not record_used_kernels(manifest)  # unchanged: not rewritten
    # Entries of other runs stay (a union); a manifest of another Numba version does not.
    _write_manifest(manifest, {"deblend.rare_path": ["(int64,)"]})
    assert record_used_kernels(manifest)
    merged = json.loads(manifest.read_text())["kernels"]
    assert merged["deblend.rare_path"] == ["(int64,)"] and KERNEL in merged
    _write_manifest(manifest, {"deblend.rare_path": ["(int64,)"]}, version="0.0.1")
    assert record_used_kernels(manifest)
    assert "deblend.rare_path" not in json.loads(manifest.read_text())["kernels"]
    assert [p.name for p in manifest.parent.iterdir()] == ["manifest.json"]


def test_an_unwritable_manifest_is_skipped(tmp_path):
    _signature()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert not record_used_kernels(blocker / "manifest.json")


def test_kernels_called_by_other_kernels_are_not_recorded(tmp_path):
    dispatchers = kernel_dispatchers()
    callees = called_by_kernels(dispatchers)
    # _measure_core calls centroid_one; _load_box calls noise_at; nothing calls them back.
    assert {"centroid.centroid_one", "noise.noise_at"} <= callees
    assert "measure._measure_core" not in callees
    # A compiled callee has signatures of its own, but the manifest leaves it out.
    _signature()
    manifest = tmp_path / "manifest.json"
    _write_manifest(manifest, {"centroid.centroid_one": ["(float64,)"]})
    record_used_kernels(manifest)
    kernels = json.loads(manifest.read_text())["kernels"]
    assert not set(kernels) & callees and KERNEL in kernels
