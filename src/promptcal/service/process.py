"""Calibrate one assembled visit-detector: read the snaps, run the task, write products.

:class:`ExposureProcessor` is the Kafka-free half of the worker: given the snaps of
one exposure (and the preload record of its ``next-visit``), it returns an
:class:`~promptcal.stream.publish.Outcome` for the result messages.

- Reading (:mod:`~promptcal.service.inputs`): the snap URIs are ``file://`` URIs or
  plain paths, confined to the input roots and size limits. A file missing or still
  being written is waited for (``file_wait``); then, like a damaged or non-FITS file,
  it raises :class:`~promptcal.core.errors.InvalidInputError` (the worker sends the
  snaps to ``dead-letter``); storage errors (``EIO``, ``ESTALE``) are retried.
- Identity: the message is authoritative: each snap gets the message's visit,
  detector and band (the band selects the reference band).
- Without a WCS in the file, the footprint predicted at preload time gives the task a
  pointing hint.
- Any failure of the calibration itself is a result (``status=failed``): an
  :class:`~promptcal.core.errors.AlgorithmError` as designed, the time limit
  (:mod:`~promptcal.service.deadline`), any other exception logged with its traceback
  (a poison exposure must not stall its partition forever). A storage error of the
  reference catalog is not the exposure's fault: the calibration is retried, then a
  :class:`~promptcal.core.errors.TransientError` stops the worker.
- Products go to ``<root>/<instrument>/<visit>/<detector>/``, written atomically;
  ``OSError`` s are retried with backoff, then raised as
  :class:`~promptcal.core.errors.TransientError`. The steps are separate
  (:meth:`ExposureProcessor.calibrate`, :meth:`~ExposureProcessor.start_write`,
  :meth:`~ExposureProcessor.finish_write`) so that the worker can calibrate the next
  exposure while a calexp goes to the device. Products are not ``fsync`` ed there: the
  worker publishes the result first and calls :meth:`ExposureProcessor.make_durable`
  before it commits the input offsets (a crash in between redoes the exposure).
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

from promptcal.core.crashpoints import crash_point
from promptcal.core.errors import AlgorithmError, InvalidInputError, TransientError
from promptcal.service.assembler import PendingExposure, ReceivedSnap
from promptcal.service.deadline import time_limit
from promptcal.service.inputs import InputPolicy, SnapReader
from promptcal.service.locations import (
    output_root,
    product_dir,
    product_dir_parents,
    recent_product_dirs,
    uri_to_path,
)
from promptcal.service.outcome import Outcome
from promptcal.service.preload import Preloader, PreloadRecord
from promptcal.service.records import Calibration, ProductsInFlight
from promptcal.service.retries import retry_delays, with_retries

logger = logging.getLogger(__name__)


def match_counts(result: Any) -> dict[str, int | None]:
    """Reference matches used by the astrometric and photometric fits (``None``: no fit),
    from the ``calib_<kind>_used`` flags of ``result.stars``."""
    stars = getattr(result, "stars", None)
    names = getattr(stars, "colnames", ())
    return {
        kind: int(sum(map(bool, stars[f"calib_{kind}_used"])))
        if f"calib_{kind}_used" in names
        else None
        for kind in ("astrometry", "photometry")
    }


class ExposureProcessor:
    """Read, calibrate and write one exposure.

    Parameters
    ----------
    config : CalibrateImageConfig
        The calibration configuration.
    refcat : RefcatLoader
        The loader shared with the preloader.
    output : str
        Product root (path or ``file://`` URI).
    retries, backoff : int, float
        Storage retries and first backoff [s].
    inputs : InputPolicy, optional
        Input roots and limits of the snap files (default: unconfined, default limits).
    time_limit : float, optional
        Longest calibration of one exposure [s] (``None``: no limit).
    stale_temp_seconds : float
        A temporary product file untouched this long is a dead writer's [s].
    """

    def __init__(
        self,
        config,
        refcat,
        output: str,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        inputs: InputPolicy | None = None,
        time_limit: float | None = None,
        stale_temp_seconds: float = 900.0,
    ):
        self.config = config
        self.config_hash = config.config_hash()
        self.refcat = refcat
        self.root = output_root(output)
        self.retries = retries
        self.backoff = backoff
        policy = inputs or InputPolicy()
        self.reader = SnapReader(
            InputPolicy(**{**policy.__dict__, "retries": retries, "backoff": backoff})
        )
        self.time_limit = time_limit
        self.stale_temp_seconds = stale_temp_seconds

    def read(
        self, snaps: list[ReceivedSnap], saturation: float | None = None
    ) -> tuple[list, list[Path]]:
        """The snaps' exposures, with the messages' visit, detector and band (and the
        camera's saturation level, when it has one)."""
        from promptcal.core.exposure import Detector

        exposures, paths = [], []
        for snap in snaps:
            msg = snap.message
            exposure, path = self.reader.read(
                msg.uri,
                msg.band,
                weight_uri=getattr(msg, "weight_uri", None),
                mask_uri=getattr(msg, "mask_uri", None),
                saturation=saturation,
            )
            exposure.visit_info.exposure_id = int(msg.visit)
            if exposure.detector is None:
                exposure.detector = Detector(id=int(msg.detector))
            else:
                exposure.detector.id = int(msg.detector)
            exposures.append(exposure)
            paths.append(path)
        return exposures, paths

    def process(
        self, pending: PendingExposure, record: PreloadRecord | None, preloader: Preloader
    ) -> Outcome:
        """Calibrate one exposure and write its products (all three steps in turn).

        Raises
        ------
        InvalidInputError
            A snap cannot be read (send the snaps to ``dead-letter``).
        TransientError
            The products could not be written after the retries.
        """
        return self.finish_write(self.start_write(self.calibrate(pending, record, preloader)))

    def calibrate(
        self, pending: PendingExposure, record: PreloadRecord | None, preloader: Preloader
    ) -> Calibration:
        """Read the snaps and run the task; a failure of the task is a result.

        Raises
        ------
        InvalidInputError
            A snap cannot be read (send the snaps to ``dead-letter``).
        TransientError
            Reading, or the reference catalog, kept failing with storage errors.
        """
        for delay in [*retry_delays(self.retries, self.backoff), None]:
            try:
                return self._calibrate(pending, record, preloader)
            except TransientError as exc:
                if delay is None:
                    raise
                logger.warning(
                    "visit %d detector %d: %s; calibrating again in %.2f s",
                    pending.visit,
                    pending.detector,
                    exc,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _calibrate(
        self, pending: PendingExposure, record: PreloadRecord | None, preloader: Preloader
    ) -> Calibration:
        from promptcal.core.ids import IdGenerator
        from promptcal.core.task import Struct
        from promptcal.pipeline.task import CalibrateImageTask

        started = time.time()
        t0 = time.perf_counter()
        exposures, paths = self.read(
            pending.ordered_snaps(), _camera_saturation(preloader, pending.detector)
        )
        read_time = time.perf_counter() - t0
        # Shards still cached from a preload that finished before the pixels came?
        preloaded = (
            record is not None
            and record.ok
            and record.finished_at <= pending.first_received_at
            and preloader.still_cached(record)
        )
        misses_before = self.refcat.cache_info()["misses"]
        task = CalibrateImageTask(self.config, refcat=self.refcat)
        result = Struct()
        error: BaseException | None = None
        cpu0, t1 = time.process_time(), time.perf_counter()
        try:
            with time_limit(self.time_limit, f"visit {pending.visit} detector {pending.detector}"):
                task.run(
                    exposures=exposures[0] if len(exposures) == 1 else exposures,
                    id_generator=IdGenerator(visit=pending.visit, detector=pending.detector),
                    result=result,
                    pointing_hint=self._hint(exposures[0], record),
                )
        except AlgorithmError as exc:
            error = exc
        except (TransientError, MemoryError):
            raise
        except Exception as exc:  # not designed to fail: report it, keep the partition moving
            logger.exception(
                "calibration of visit %d detector %d raised", pending.visit, pending.detector
            )
            error = exc
        crash_point("calibration")
        hit = preloaded and self.refcat.cache_info()["misses"] == misses_before
        return Calibration(
            pending=pending,
            task=task,
            result=result,
            error=error,
            inputs=paths,
            started=started,
            read_time=read_time,
            calib_time=time.perf_counter() - t1,
            cpu_time=time.process_time() - cpu0,
            preload_hit=None if record is None else bool(hit),
            preload_duration=None if record is None else record.duration,
        )

    def start_write(self, calibration: Calibration) -> ProductsInFlight:
        """Write the catalogs and start the calexp
        (see :func:`promptcal.io.products.start_products`).

        Raises
        ------
        TransientError
            The storage kept failing.
        """
        from promptcal.io.files import remove_stale_temporaries

        t0 = time.perf_counter()
        out = self._product_dir(calibration)
        # A worker killed while writing this exposure before left its temporary files.
        remove_stale_temporaries([out], stale_after=self.stale_temp_seconds)
        products = with_retries(
            lambda: self._start_products(calibration, out),
            f"writing products to {out}",
            self.retries,
            self.backoff,
        )
        return ProductsInFlight(calibration, products, t0)

    def finish_write(self, writing: ProductsInFlight) -> Outcome:
        """Complete the products (calexp, then ``summary.json``); the exposure's outcome.

        A storage error writes the whole set again, with the retries.

        Raises
        ------
        TransientError
            The storage kept failing.
        """
        calibration = writing.calibration
        out = self._product_dir(calibration)
        first = [writing.products]

        def finish() -> dict[str, Path]:
            products = first.pop() if first else self._start_products(calibration, out)
            return products.finish()

        products = with_retries(finish, f"writing products to {out}", self.retries, self.backoff)
        write_time = time.perf_counter() - writing.started
        return self._outcome(calibration, products, write_time)

    def _product_dir(self, calibration: Calibration) -> Path:
        pending = calibration.pending
        return product_dir(self.root, pending.instrument, pending.visit, pending.detector)

    def _start_products(self, calibration: Calibration, out: Path):
        from promptcal.io.products import start_products

        return start_products(
            calibration.result,
            out,
            task=calibration.task,
            status=calibration.status,
            error=calibration.error,
            timings={"read": calibration.read_time},
            inputs=calibration.inputs,
            durable=False,
        )

    def _outcome(self, calibration: Calibration, products: dict, write_time: float) -> Outcome:
        pending, error = calibration.pending, calibration.error
        timings = {
            **calibration.task.stage_durations(),
            "read": calibration.read_time,
            "write": write_time,
        }
        failure = getattr(calibration.result, "failure", None) or {}
        summary = getattr(calibration.result, "summary", None) or {}
        return Outcome(
            instrument=pending.instrument,
            visit=pending.visit,
            detector=pending.detector,
            status=calibration.status,
            summary=summary,
            products={k: Path(v).resolve().as_uri() for k, v in sorted(products.items())},
            timings=timings,
            config_hash=self.config_hash,
            wall_time=calibration.read_time + calibration.calib_time + write_time,
            cpu_time=calibration.cpu_time,
            peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            preload_hit=calibration.preload_hit,
            preload_duration=calibration.preload_duration,
            queue_wait=calibration.started - pending.last_produced_at,
            last_produced_at=pending.last_produced_at,
            error_type=None if error is None else type(error).__name__,
            error_message=None if error is None else (str(error) or type(error).__name__),
            error_metadata=None if error is None else failure.get("metadata", {}),
            matches=match_counts(calibration.result),
        )

    def sweep_temporaries(self, window: float = 2 * 86400.0) -> int:
        """Remove the temporary files killed writers left in product directories of
        visits modified within ``window`` seconds (at start; older exposures are swept
        when they are written again); returns how many were removed."""
        from promptcal.io.files import remove_stale_temporaries

        directories = recent_product_dirs(self.root, window)
        removed = remove_stale_temporaries(directories, stale_after=self.stale_temp_seconds)
        if removed:
            shown = ", ".join(str(p) for p in removed[:5])
            logger.warning("removed %d temporary file(s) of dead writers: %s", len(removed), shown)
        return len(removed)

    def make_durable(self, outcome: Outcome) -> None:
        """``fsync`` the products of ``outcome`` (and their directory and its new
        parents), with retries, and drop them from the page cache.

        Raises
        ------
        TransientError
            The storage kept failing.
        """
        from promptcal.io.files import sync_directories, sync_paths

        paths = [uri_to_path(uri) for uri in outcome.products.values()]
        out = product_dir(self.root, outcome.instrument, outcome.visit, outcome.detector)

        def sync():
            # Evicting the synced pages keeps the page cache from growing by every
            # exposure's catalogs (the calexp bypasses it: promptcal.io.direct).
            missing = sync_paths(paths, drop_cache=True, missing_ok=True)
            # The product directory may be new, and its visit and instrument directories:
            # their entries are in the parents, which need an fsync of their own.
            sync_directories(product_dir_parents(out, self.root))
            return missing

        missing = with_retries(sync, "syncing products", self.retries, self.backoff)
        if missing:  # removed by someone after the publish: nothing left to make durable
            logger.warning(
                "visit %d detector %d: products gone before their fsync: %s",
                outcome.visit,
                outcome.detector,
                ", ".join(p.name for p in missing),
            )

    @staticmethod
    def _hint(exposure, record: PreloadRecord | None):
        """A pointing hint from the predicted footprint, for files without a WCS."""
        if exposure.wcs is not None or record is None or record.center is None:
            return None
        from promptcal.pipeline.astrometry.fitter import PointingHint

        return PointingHint(record.center[0], record.center[1], record.pixel_scale, record.rotation)


def _camera_saturation(preloader: Preloader | None, detector: int) -> float | None:
    """The camera's saturation level of ``detector`` [count] (archive cameras set it)."""
    try:
        return preloader.camera.detector(detector).saturation
    except (AttributeError, InvalidInputError):
        return None
