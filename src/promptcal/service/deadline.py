"""A wall-clock limit on one exposure's calibration, in any thread.

A pathological exposure must not hang every worker that takes over its partition
(issue 15). :func:`time_limit` arms a timer; when it fires while the guarded block
still runs, :class:`TimeLimitExceeded` is raised *in the calibrating thread* (CPython's
``PyThreadState_SetAsyncExc``, which works in test threads too, unlike ``SIGALRM``).
The exception is an :class:`~promptcal.core.errors.AlgorithmError`, so the worker
publishes a ``failed`` result and the partition moves on.

Limits: the exception is delivered at the next Python bytecode, so a single Numba
kernel call (``nogil``, no bytecode) finishes first; the pixel limit of
:mod:`promptcal.service.inputs` bounds how long one call can take. A limit that fires
is logged with the thread's state.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator

from promptcal.core.errors import AlgorithmError

logger = logging.getLogger(__name__)


class TimeLimitExceeded(AlgorithmError):
    """The calibration of one exposure ran longer than its time limit."""

    def __init__(self, message: str = "time limit exceeded", **metadata) -> None:
        # No-argument construction: that is how an asynchronous exception is raised.
        super().__init__(message, **metadata)


def _inject(thread_id: int, exc_type: type[BaseException] | None) -> int:
    """Raise ``exc_type`` asynchronously in the thread (``None`` cancels a pending one)."""
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str = "calibration") -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` in this thread if the block outlives ``seconds``.

    ``None`` or a non-positive value: no limit.
    """
    if seconds is None or not seconds > 0:
        yield
        return
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"running": True, "fired": False}

    def fire() -> None:
        with lock:
            if state["running"]:
                state["fired"] = True
                _inject(target, TimeLimitExceeded)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.name = "promptcal-time-limit"
    timer.start()
    try:
        yield
    except TimeLimitExceeded as exc:
        raise TimeLimitExceeded(
            f"{what} exceeded its time limit of {seconds:g} s", limit_seconds=float(seconds)
        ) from exc
    finally:
        with lock:
            state["running"] = False
            fired = state["fired"]
        timer.cancel()
        if fired:
            # The exception may still be pending (fired just as the block ended):
            # cancel it so that it cannot land in unrelated code.
            _inject(target, None)
            logger.warning("%s stopped after its time limit of %g s", what, seconds)
    if fired:
        raise TimeLimitExceeded(
            f"{what} exceeded its time limit of {seconds:g} s", limit_seconds=float(seconds)
        )
