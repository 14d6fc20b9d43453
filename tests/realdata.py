"""Where the shared real frames are (../shared/data/real next to the repository).

``PROMPTCAL_REAL_DATA`` overrides; a clone placed elsewhere on a workplace machine
finds ``/work/shared/data/real``. Tests that need the frames use ``requires_real_data``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _find() -> Path | None:
    candidates = [
        os.environ.get("PROMPTCAL_REAL_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "real",
        "/work/shared/data/real",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    return None


REAL: Path = _find() or Path("/nonexistent/shared/data/real")

requires_real_data = pytest.mark.skipif(
    _find() is None, reason="shared real data not found (set PROMPTCAL_REAL_DATA)"
)
