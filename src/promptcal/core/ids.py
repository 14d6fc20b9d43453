"""Source ids unique across the survey: (visit, detector) packed above a counter.

Ids are ``packed << COUNTER_BITS | counter`` in a signed 64-bit integer: 38 bits for the
packed (release, visit, detector) and 25 bits (33 M sources) for the counter. Rubin-style
visit numbers ``YYYYMMDDsssss`` (day of observation and a 5-digit sequence number) are
compacted to ``days since 2000-01-01 × 100000 + sequence`` first, so they fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promptcal.core.errors import InvalidInputError

COUNTER_BITS = 25
PACKED_BITS = 38
_DAY_ZERO = np.datetime64("2000-01-01")


def compact_visit(visit: int) -> int:
    """``YYYYMMDDsssss`` → days since 2000-01-01 × 100000 + sssss; other visits unchanged."""
    if visit < 10**12:
        return int(visit)
    day, sequence = divmod(int(visit), 100_000)
    text = str(day)
    try:
        date = np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:8]}")
    except ValueError as exc:
        raise InvalidInputError(f"visit {visit} is neither small nor YYYYMMDDsssss") from exc
    days = int((date - _DAY_ZERO).astype(int))
    if len(text) != 8 or days < 0:
        raise InvalidInputError(f"visit {visit} is neither small nor YYYYMMDDsssss after 2000")
    return days * 100_000 + sequence


@dataclass(frozen=True)
class IdGenerator:
    """Packs (release, visit, detector) into the high bits of 64-bit source ids.

    Parameters
    ----------
    visit, detector : int
        Observation and detector numbers.
    n_visits, n_detectors : int
        Exclusive upper bounds used for packing.
    release, n_releases : int
        Data-release id and its bound (LSST's observation packer has these too).
    """

    visit: int = 0
    detector: int = 0
    n_visits: int = 1 << 30
    n_detectors: int = 200
    release: int = 0
    n_releases: int = 1

    def __post_init__(self) -> None:
        for name, value, bound in (
            ("visit", compact_visit(self.visit), self.n_visits),
            ("detector", self.detector, self.n_detectors),
            ("release", self.release, self.n_releases),
        ):
            if not 0 <= value < bound:
                raise InvalidInputError(f"{name} {value} outside [0, {bound})")
        if self.packed >= 2**PACKED_BITS:
            raise InvalidInputError(
                f"packed (release, visit, detector) id exceeds {PACKED_BITS} bits"
            )

    @property
    def packed(self) -> int:
        """The packed exposure id."""
        visit = compact_visit(self.visit)
        return (self.release * self.n_visits + visit) * self.n_detectors + self.detector

    @property
    def catalog_seed(self) -> int:
        """A reproducible seed for random choices on this exposure (noise, sky sources)."""
        return int(self.packed & 0x7FFFFFFF)

    def source_ids(self, count: int, start: int = 1) -> np.ndarray:
        """``count`` consecutive source ids (counter from ``start``)."""
        if start + count >= 2**COUNTER_BITS:
            raise InvalidInputError("too many sources for the id counter")
        counter = np.arange(start, start + count, dtype=np.int64)
        return (np.int64(self.packed) << COUNTER_BITS) | counter
