"""Where the scripts find the shared real data: ``PROMPTCAL_REAL_DATA``, else
``../shared/data/real`` beside the repository (the tests pass the directory they found
through ``PROMPTCAL_REAL_DATA``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """The shared real-data directory; exits with a message when there is none."""
    for candidate in (
        os.environ.get("PROMPTCAL_REAL_DATA"),
        REPO.parent / "shared" / "data" / "real",
    ):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    sys.exit("shared real data not found: set PROMPTCAL_REAL_DATA to its directory")
