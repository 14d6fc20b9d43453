"""The one decorator factory every kernel uses."""

from __future__ import annotations

import numba


def kernel(fn=None, *, parallel: bool = False):
    """Compile ``fn`` with the project's Numba options.

    ``cache=True`` keeps compiled code across processes (``NUMBA_CACHE_DIR``),
    ``nogil=True`` lets a worker's threads overlap I/O with compute, and
    ``error_model='numpy'`` avoids Python's exception checks on division.
    """

    def wrap(f):
        return numba.njit(cache=True, nogil=True, error_model="numpy", parallel=parallel)(f)

    return wrap(fn) if fn is not None else wrap
