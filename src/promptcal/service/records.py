"""What :class:`~promptcal.service.process.ExposureProcessor` hands from one step to the
next: an exposure calibrated (:class:`Calibration`), then being written
(:class:`ProductsInFlight`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcal.service.assembler import PendingExposure


@dataclass
class Calibration:
    """One exposure read and calibrated (successfully or not), before its products."""

    pending: PendingExposure
    task: Any
    result: Any  # the task's Struct, partial after a failure
    error: BaseException | None
    inputs: list[Path]
    started: float  # reading began [POSIX s]
    read_time: float  # [s]
    calib_time: float  # [s]
    cpu_time: float  # process CPU during the task [s]
    preload_hit: bool | None
    preload_duration: float | None  # [s]

    @property
    def status(self) -> str:
        """``"failed"`` if the task raised, else ``"success"``."""
        return "failed" if self.error is not None else "success"


@dataclass
class ProductsInFlight:
    """An exposure whose catalogs are written and whose calexp is on its way."""

    calibration: Calibration
    products: Any  # promptcal.io.products.PendingProducts
    started: float  # the write began [time.perf_counter s]
