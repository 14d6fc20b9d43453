"""Process-wide memory-allocator tuning for the calibration processes.

glibc serves every allocation above 32 MB (a 4k×4k float32 plane is 67 MB) with a
fresh ``mmap`` and returns it with ``munmap`` when freed, so each full-frame temporary
pays ~16,000 first-touch page faults; on this project's virtual machines that is
~0.1 s per plane and ~0.3 s of a 4k×4k ``run()``. With mmap disabled and trimming
off, freed planes stay in the heap and the next exposure reuses them. The price is
that the resident size stays at its high-water mark (≈1.2 GB for a 4k×4k exposure),
which a worker that processes one exposure after another reaches anyway.

See docs/architecture.md ("Allocator") for the measurements.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_tuned = False


def tune_allocator() -> bool:
    """Make glibc keep and reuse large freed blocks (idempotent).

    Call it once at process start, before the first exposure. A no-op on C libraries
    without ``mallopt`` (musl, macOS).

    Returns
    -------
    bool
        True if the allocator is tuned (now or by an earlier call).
    """
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("mallopt unavailable; allocator left as is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. The trim threshold is a size_t set from an int:
    # 2**31 − 1 bytes keeps everything below 2 GB of free heap top.
    _tuned = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _tuned
