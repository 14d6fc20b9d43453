"""Source ids unique across the survey: (visit, detector) packed above a counter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError

COUNTER_BITS = 32


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
    n_visits: int = 10_000_000
    n_detectors: int = 200
    release: int = 0
    n_releases: int = 1

    def __post_init__(self) -> None:
        for name, value, bound in (
            ("visit", self.visit, self.n_visits),
            ("detector", self.detector, self.n_detectors),
            ("release", self.release, self.n_releases),
        ):
            if not 0 <= value < bound:
                raise InvalidInputError(f"{name} {value} outside [0, {bound})")
        if self.packed >= 2**31:
            raise InvalidInputError("packed (release, visit, detector) id exceeds 31 bits")

    @property
    def packed(self) -> int:
        """The packed exposure id."""
        return (self.release * self.n_visits + self.visit) * self.n_detectors + self.detector

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
