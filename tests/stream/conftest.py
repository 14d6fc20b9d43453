"""The simulated stream shared by the worker tests of this directory."""

from __future__ import annotations

import pytest
from worker_helpers import (
    FEW_STARS,
    HALF_VISIT,
    MAIN_VISITS,
    WRONG_ANNOUNCEMENT,
    simulate_stream,
)


@pytest.fixture(scope="session")
def stream(tmp_path_factory):
    """3 detectors × 5 visits and the special cases, simulated once per session."""
    visits = [*MAIN_VISITS, FEW_STARS, WRONG_ANNOUNCEMENT, HALF_VISIT]
    return simulate_stream(tmp_path_factory.mktemp("stream"), visits)
