"""Bounded retries with exponential backoff, for storage and publishing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from promptcal.core.errors import TransientError

logger = logging.getLogger(__name__)


def retry_delays(retries: int, backoff: float, max_backoff: float = 30.0) -> list[float]:
    """Waits before each retry [s]: ``backoff × 2^i``, capped at ``max_backoff``."""
    return [min(max_backoff, backoff * 2.0**i) for i in range(max(0, int(retries)))]


def with_retries(
    action: Callable[[], Any],
    what: str,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run ``action``, retrying ``OSError`` with backoff; then raise TransientError."""
    for delay in [*retry_delays(retries, backoff), None]:
        try:
            return action()
        except OSError as exc:
            if delay is None:
                raise TransientError(f"{what}: {exc} (after {retries} retries)") from exc
            logger.warning("%s: %s; retrying in %.2f s", what, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")
