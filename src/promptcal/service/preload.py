"""Preload a detector's reference shards when its ``next-visit`` arrives.

On ``next-visit`` the worker predicts the detector's sky footprint from the boresight,
the sky rotation angle and the camera geometry, pads it by 30" (Rubin's
PRELOAD_PADDING, for pointing and rotation errors) plus the calibration's own
reference margin (``ref_pixel_margin`` [px] × the detector's pixel scale, so that the
shards the task reads later are a subset of the preloaded ones), and reads the
overlapping shards into the :class:`~promptcal.refcat.RefcatLoader` cache. This runs
synchronously on receipt: ``next-visit`` comes >= 20 s before the pixels, and a few
shards take milliseconds.

A preload *hit* (decided by the worker when it calibrates) means the preload finished
before the first snap arrived, its shards were all still cached, and the calibration
read no shard from disk.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from promptcal.core.camera import Camera, predict_detector_footprint, predict_detector_wcs
from promptcal.core.crashpoints import crash_point
from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.refcat import RefcatLoader
from promptcal.service.messages import NextVisit

logger = logging.getLogger(__name__)

#: Rubin's PRELOAD_PADDING ["].
DEFAULT_PADDING_ARCSEC = 30.0


@dataclass
class PreloadRecord:
    """What the preload of one (visit, detector) did.

    Attributes
    ----------
    visit, detector : int
        Which exposure.
    shards : list of int
        HEALPix pixels of the shards preloaded (empty when nothing could be predicted).
    n_read : int
        Shards read from disk (the others were cached already).
    duration : float
        Wall time of the preload [s].
    finished_at : float
        When it finished, POSIX time [s].
    center : tuple of float or None
        Predicted sky position of the detector centre (RA, Dec) [deg].
    pixel_scale : float or None
        The camera's pixel scale of the detector ["/px].
    rotation : float or None
        Sky rotation angle of the visit [deg].
    error : str or None
        Why no footprint could be predicted or loaded (the exposure will be a miss).
    """

    visit: int
    detector: int
    shards: list[int] = field(default_factory=list)
    n_read: int = 0
    duration: float = 0.0
    finished_at: float = 0.0
    center: tuple[float, float] | None = None
    pixel_scale: float | None = None
    rotation: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Shards were predicted and loaded."""
        return self.error is None


class Preloader:
    """Predict footprints and warm the reference-shard cache; remember what was done.

    Parameters
    ----------
    loader : RefcatLoader
        The worker's loader (its cache is what the calibration reads through).
    camera : Camera
        Geometry of the instrument's detectors.
    padding_arcsec : float
        Padding of the predicted footprint ["] (Rubin: 30).
    extra_margin_px : float
        Extra margin [px of the detector]: the calibration's ``ref_pixel_margin``, so
        that the preloaded shards cover what the task will read.
    max_records : int
        How many (visit, detector) records to keep (oldest dropped first).
    """

    def __init__(
        self,
        loader: RefcatLoader,
        camera: Camera,
        *,
        padding_arcsec: float = DEFAULT_PADDING_ARCSEC,
        extra_margin_px: float = 0.0,
        max_records: int = 4096,
    ) -> None:
        if not (padding_arcsec >= 0 and extra_margin_px >= 0):
            raise InvalidInputError(
                f"preload padding {padding_arcsec} arcsec and margin {extra_margin_px} px "
                "must be >= 0"
            )
        self.loader = loader
        self.camera = camera
        self.padding_arcsec = float(padding_arcsec)
        self.extra_margin_px = float(extra_margin_px)
        self.max_records = int(max_records)
        self._records: OrderedDict[tuple[int, int], PreloadRecord] = OrderedDict()

    def shards_for(self, message: NextVisit) -> tuple[list[int], tuple[float, float], float]:
        """Shards overlapping the padded predicted footprint, the centre and pixel scale.

        Raises
        ------
        InvalidInputError
            The rotation is not on the sky, or the camera has no such detector.
        """
        if message.rotation_system != "SKY":
            raise InvalidInputError(
                f"rotation_system {message.rotation_system!r}: only SKY allows a footprint "
                "prediction"
            )
        camera = self.camera
        scale = camera.detector_pixel_scale(message.detector)
        if message.pixel_scale is not None:
            # The message knows this detector's scale better (archived nights): the
            # camera's plate scale is rescaled so that footprint and hint use it.
            factor = message.pixel_scale / scale
            camera = camera.model_copy(
                update={"pixel_scale_arcsec": camera.pixel_scale_arcsec * factor}
            )
            scale = float(message.pixel_scale)
        args = (
            camera,
            message.detector,
            message.boresight_ra,
            message.boresight_dec,
            message.rotation_angle,
        )
        ra, dec = predict_detector_footprint(*args, padding_arcsec=self.padding_arcsec)
        wcs = predict_detector_wcs(*args)
        det = camera.detector(message.detector)
        c_ra, c_dec = wcs.pixel_to_world_values((det.width - 1) / 2.0, (det.height - 1) / 2.0)
        shards = self.loader.shards_for_region(
            ra, dec, margin_deg=self.extra_margin_px * scale / 3600.0
        )
        return shards, (float(c_ra) % 360.0, float(c_dec)), scale

    def preload(self, message: NextVisit) -> PreloadRecord:
        """Predict the footprint and read its shards into the cache (never raises).

        A footprint that cannot be predicted, or a shard that cannot be read, is logged
        and recorded in :attr:`PreloadRecord.error`: the calibration then loads what it
        needs itself (a miss), and reports the real problem if there is one.
        """
        start = time.perf_counter()
        record = PreloadRecord(
            message.visit, message.detector, rotation=float(message.rotation_angle)
        )
        try:
            record.shards, record.center, record.pixel_scale = self.shards_for(message)
            record.n_read = self.loader.preload(record.shards)
            crash_point("preload")
        except (InvalidInputError, TransientError) as exc:  # best effort: the task reloads
            record.error = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "preload visit=%d detector=%d failed: %s", message.visit, message.detector, exc
            )
        record.duration = time.perf_counter() - start
        record.finished_at = time.time()
        key = (message.visit, message.detector)
        self._records.pop(key, None)
        self._records[key] = record
        while len(self._records) > self.max_records:
            self._records.popitem(last=False)
        if record.ok:
            logger.info(
                "preload visit=%d detector=%d done: %d shards (%d read) in %.3f s",
                message.visit,
                message.detector,
                len(record.shards),
                record.n_read,
                record.duration,
            )
        return record

    def get(self, visit: int, detector: int) -> PreloadRecord | None:
        """The record of a (visit, detector), if its ``next-visit`` was seen."""
        return self._records.get((visit, detector))

    def pop(self, visit: int, detector: int) -> PreloadRecord | None:
        """Remove and return the record (once the exposure is done)."""
        return self._records.pop((visit, detector), None)

    def still_cached(self, record: PreloadRecord) -> bool:
        """Whether every shard of the record is in the cache now (re-reads any that are not).

        ``RefcatLoader.preload`` returns how many shards it had to read: zero means they
        were all still cached.
        """
        return self.loader.preload(record.shards) == 0
