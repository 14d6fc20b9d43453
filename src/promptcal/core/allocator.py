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
import functools
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Peak heap of a calibration per detector pixel (4k×4k: ~1.1 GB of 1.2 GB RSS) [B/px].
HEAP_BYTES_PER_PIXEL = 64

#: Pieces in which :func:`reserve_heap_in_background` touches and frees the heap [B].
RESERVE_CHUNK_BYTES = 64 * 2**20

#: glibc ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_tuned = False


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library (raises OSError where it cannot be loaded)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


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
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        log.debug("mallopt unavailable; allocator left as is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. The trim threshold is a size_t set from an int:
    # 2**31 − 1 bytes keeps everything below 2 GB of free heap top.
    _tuned = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _tuned


def _malloc(nbytes: int) -> int | None:
    """A block of ``nbytes`` from the calling thread's arena (None if refused)."""
    libc = _libc()
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    block = libc.malloc(int(nbytes))
    if not block:
        log.warning("could not reserve %.0f MB of heap", nbytes / 1e6)
        return None
    return block


def reserve_heap(nbytes: int) -> bool:
    """Fault ``nbytes`` of heap in now and keep it for later allocations.

    With :func:`tune_allocator` in effect, freed memory stays in the process, so
    allocating, touching and freeing one block here means the first exposure's planes
    come from memory that is already backed instead of paying ~1.5 ms per MB of page
    faults on the latency path (0.8 s on a fresh worker's first 4k×4k exposure).

    Parameters
    ----------
    nbytes : int
        Bytes to reserve [B]; 0 does nothing.

    Returns
    -------
    bool
        True if the heap was reserved (False without a tuned glibc allocator).
    """
    return reserve_heap_in_background(nbytes, background=False)()


def reserve_heap_in_background(nbytes: int, *, background: bool = True) -> Callable[..., bool]:
    """Start faulting ``nbytes`` of heap in on another thread (:func:`reserve_heap`).

    The memory is allocated in the calling thread, in pieces of
    :data:`RESERVE_CHUNK_BYTES`, so it comes from the main heap that later allocations
    of this thread use (a block allocated by another thread would come from that
    thread's arena); only the touching, which holds no GIL, runs on the other thread,
    overlapping the caller's own work (imports, say) on a second core. Each piece is
    handed back to the allocator as soon as it is touched, so whatever is done by the
    time the caller needs memory serves it, and the caller never waits for the rest.

    Parameters
    ----------
    nbytes : int
        Bytes to reserve [B]; 0 does nothing.
    background : bool
        False touches every piece in the calling thread, before returning.

    Returns
    -------
    callable
        ``finish(wait=False)``: stops the touching after the piece in hand (or, with
        ``wait=True``, after the last one) and frees the pieces not touched; call it
        before the allocations the reservation is meant to serve. Returns True if
        heap was reserved.
    """
    if nbytes <= 0 or not tune_allocator():
        return lambda wait=False: False
    pieces = []
    for _ in range(-(-int(nbytes) // RESERVE_CHUNK_BYTES)):
        block = _malloc(RESERVE_CHUNK_BYTES)
        if block is None:
            break
        pieces.append(block)
    if not pieces:
        return lambda wait=False: False
    lock = threading.Lock()
    stop = threading.Event()
    untouched = list(reversed(pieces))  # touched in allocation order

    def take() -> int | None:
        with lock:
            return None if stop.is_set() or not untouched else untouched.pop()

    def touch_all() -> None:
        while (block := take()) is not None:
            ctypes.memset(block, 0, RESERVE_CHUNK_BYTES)  # every page
            _libc().free(block)

    toucher = threading.Thread(target=touch_all, name="heap-reserve", daemon=True)
    if background:
        toucher.start()
    else:
        touch_all()

    def finish(wait: bool = False) -> bool:
        if background:
            if not wait:
                stop.set()
            toucher.join()
        stop.set()
        with lock:
            rest = untouched[:]
            untouched.clear()
        for block in rest:
            _libc().free(block)
        return True

    return finish
