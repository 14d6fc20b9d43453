"""Crash points: where the fault tests kill a worker with SIGKILL (issue 15).

``PROMPTCAL_CRASH_AT="<name>:<n>"`` (read at import) makes the process kill itself
with SIGKILL the ``n``-th time it reaches :func:`crash_point` ``(name)``: no cleanup,
no flush, no commit, exactly like the kernel's OOM killer or a node failure, but at a
chosen step. Unset (production), a crash point costs one dictionary lookup.

The points, in the order an exposure passes them (see ``tests/faults/``):

``preload``           a ``next-visit``'s shards were read
``calibration``       an exposure is calibrated, nothing written yet
``finisher``          the finisher thread took an exposure (its calexp may be half written)
``before_rename``     a product file is complete under its temporary name
``products_written``  every product is in place, nothing published
``published``         the result is acknowledged by the broker, the offsets not committed
``durable``           the products are fsynced, the offsets not committed
"""

from __future__ import annotations

import os
import signal
import threading

#: The environment variable that arms a crash point.
ENV = "PROMPTCAL_CRASH_AT"
CRASH_POINTS = (
    "preload",
    "calibration",
    "finisher",
    "before_rename",
    "products_written",
    "published",
    "durable",
)


def _parse(text: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        if name not in CRASH_POINTS:
            raise ValueError(f"{ENV}: unknown crash point {name!r}; known: {CRASH_POINTS}")
        armed[name] = int(count or 1)
    return armed


_ARMED = _parse(os.environ.get(ENV, ""))
_HITS: dict[str, int] = {}
_LOCK = threading.Lock()


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``name`` is armed and reached its count."""
    target = _ARMED.get(name)
    if target is None:
        return
    with _LOCK:
        _HITS[name] = hits = _HITS.get(name, 0) + 1
    if hits == target:
        os.kill(os.getpid(), signal.SIGKILL)
