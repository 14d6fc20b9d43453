"""The allocator tuning makes freed full-frame planes reusable without page faults."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from promptcal.core.allocator import tune_allocator

    assert tune_allocator() and tune_allocator()  # idempotent
    def touch():
        plane = np.empty(16_000_000, np.float32)  # 64 MB, above glibc's mmap threshold
        plane.fill(1.0)
        return float(plane[-1])
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_planes_are_reused_without_page_faults():
    # Untuned, each 64 MB plane is a fresh mmap: ≥32 faults even with 2 MB huge pages,
    # ~16,000 with 4 kB pages. Tuned, the freed plane comes back from the heap.
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], check=True, capture_output=True, text=True
    )
    assert int(out.stdout.strip()) <= 10


RESERVE_PROGRAM = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from promptcal.core.allocator import reserve_heap, reserve_heap_in_background, tune_allocator

    assert tune_allocator()
    reserve, background = int(sys.argv[1]), sys.argv[2] == "background"
    if background:
        finish = reserve_heap_in_background(reserve)
        sum(range(1_000_000))  # the caller's own work meanwhile
        assert finish(wait=True) == (reserve > 0) and finish() == (reserve > 0)  # idempotent
    else:
        assert reserve_heap(reserve) == (reserve > 0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    planes = [np.empty(16_000_000, np.float32) for _ in range(3)]  # 192 MB at once
    for plane in planes:
        plane.fill(1.0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
@pytest.mark.parametrize("where", ["here", "background"])
def test_reserved_heap_serves_the_first_planes_without_page_faults(where):
    def faults(reserve: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", RESERVE_PROGRAM, str(reserve), where],
            check=True,
            capture_output=True,
            text=True,
        )
        return int(out.stdout.strip())

    # Tuned but without a reserve, the first 192 MB are fresh pages (≥96 faults even as 2 MB pages).
    assert faults(0) >= 96
    assert faults(256_000_000) <= 10
