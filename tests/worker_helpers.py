"""Build small test streams for the worker: a camera, simulated snaps, a refcat, messages.

The camera has three 512×512 px detectors side by side at 0.2″/px. Each simulated
exposure is placed where the camera predicts its detector to be for the visit's
boresight and rotation, so the preload footprint really contains it, and the
reference catalog is the union of the truth tables (calibration 20 nJy/count, so the
true zero point is 31.4 − 2.5 log10(20) mag).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import vstack

from promptcal.core.camera import Camera, DetectorGeometry, predict_detector_wcs, write_camera
from promptcal.io import write_exposure
from promptcal.refcat import build_refcat
from promptcal.service.messages import ImageReady, NextVisit
from promptcal.simulate import SkyConfig, refcat_table_from_truth, simulate_exposure

INSTRUMENT = "ToyCam"
SIZE = 512
PIXEL_SCALE = 0.2  # [arcsec/px]
CALIBRATION = 20.0  # [nJy/count]
TRUE_ZERO_POINT = 31.4 - 2.5 * math.log10(CALIBRATION)  # [mag]
PSF_FWHM = 4.0  # [px], SkyConfig's default
T0 = dt.datetime(2026, 2, 24, 3, 0, 0, tzinfo=dt.UTC)


def make_camera(size: int = SIZE) -> Camera:
    """Three size×size detectors along focal-plane x, 0.5 mm gaps, 10 µm pixels."""
    pitch = size * 0.01 + 0.5  # [mm]
    detectors = tuple(
        DetectorGeometry(
            id=i,
            name=f"D{i}",
            width=size,
            height=size,
            center_x_mm=(i - 1) * pitch,
            center_y_mm=0.0,
        )
        for i in range(3)
    )
    return Camera(name="toy1x3", pixel_scale_arcsec=PIXEL_SCALE, detectors=detectors)


@dataclass
class Visit:
    """One visit of the test stream."""

    visit: int
    ra: float  # boresight [deg]
    dec: float
    rotation: float = 0.0  # [deg]
    n_snaps: int = 1
    n_stars: int = 60
    announced_ra: float | None = None  # next-visit boresight, when it lies [deg]
    detectors: tuple[int, ...] = (0, 1, 2)


@dataclass
class SimStream:
    """Files and truth of a stream."""

    root: Path
    camera_path: Path
    refcat: Path
    snaps: dict[tuple[int, int], list[Path]] = field(default_factory=dict)
    visits: dict[int, Visit] = field(default_factory=dict)


def simulate_stream(root: Path, visits: list[Visit], size: int = SIZE) -> SimStream:
    """Simulate every (visit, detector), write the snaps, and build the refcat."""
    camera = make_camera(size)
    root.mkdir(parents=True, exist_ok=True)
    stream = SimStream(root, root / "camera.json", root / "refcat")
    write_camera(camera, stream.camera_path)
    truths = []
    for v in visits:
        stream.visits[v.visit] = v
        for det in v.detectors:
            wcs = predict_detector_wcs(camera, det, v.ra, v.dec, v.rotation)
            ra, dec = wcs.pixel_to_world_values((size - 1) / 2, (size - 1) / 2)
            config = SkyConfig(
                width=size,
                height=size,
                ra=float(ra) % 360,
                dec=float(dec),
                rotation=v.rotation,
                pixel_scale=PIXEL_SCALE,
                n_stars=v.n_stars,
                star_flux_min=3000.0,
                star_flux_max=3.0e5,
                sip_order=0,
                background=500.0,
                band="r",
                calibration=CALIBRATION,
                exposure_id=v.visit,
                detector_id=det,
                n_snaps=v.n_snaps,
                psf_fwhm=PSF_FWHM,
            )
            sim = simulate_exposure(config, seed=1000 * v.visit + det)
            truth = sim.truth.copy()
            truth["id"] = np.asarray(truth["id"]) + 10_000 * (100 * v.visit + det)
            truths.append(truth)
            paths = []
            for i, snap in enumerate(sim.snaps):
                path = root / "raw" / f"v{v.visit}_d{det}_s{i}.fits"
                path.parent.mkdir(exist_ok=True)
                write_exposure(snap, path)
                paths.append(path)
            stream.snaps[(v.visit, det)] = paths
    table = refcat_table_from_truth(vstack(truths), "r")
    source = root / "refcat_source.parquet"
    table.write(source, format="parquet", overwrite=True)
    build_refcat(
        source,
        stream.refcat,
        ra_col="ra",
        dec_col="dec",
        bands={"r": ("r_flux", "nJy")},
        band_errors={"r": "r_fluxErr"},
    )
    return stream


def next_visit(v: Visit, detector: int) -> NextVisit:
    """The ``next-visit`` message of (visit, detector)."""
    ra = v.ra if v.announced_ra is None else v.announced_ra
    return NextVisit(
        instrument=INSTRUMENT,
        visit=v.visit,
        detector=detector,
        group_id=f"g{v.visit}",
        band="r",
        boresight_ra=ra % 360,
        boresight_dec=v.dec,
        rotation_angle=v.rotation,
        rotation_system="SKY",
        start_time=T0,
        exposure_duration=15.0,
        n_snaps=v.n_snaps,
        private_sndStamp=time.time(),
    )


def image_ready(v: Visit, detector: int, snap: int, path: Path) -> ImageReady:
    """The ``image-ready`` message of one snap (``file://`` URI)."""
    return ImageReady(
        instrument=INSTRUMENT,
        visit=v.visit,
        detector=detector,
        snap=snap,
        n_snaps=v.n_snaps,
        band="r",
        exposure_time=15.0,
        mid_exposure_time=T0,
        uri=path.resolve().as_uri(),
        produced_at=time.time(),
    )


class EventLog:
    """Thread-safe record of worker events, with waits on conditions (no fixed sleeps)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self._cond = threading.Condition()

    def __call__(self, event: str, info: dict) -> None:
        with self._cond:
            self.events.append((event, info))
            self._cond.notify_all()

    def of(self, event: str) -> list[dict]:
        with self._cond:
            return [info for name, info in self.events if name == event]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    def wait_count(self, event: str, n: int, timeout: float = 30.0) -> list[dict]:
        self.wait_for(lambda: len(self.of(event)) >= n, timeout, f"{n} {event!r} events")
        return self.of(event)


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET ``http://127.0.0.1:port/path``: (status, body); connection errors give (0, '')."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def poll_until(predicate: Callable[[], object], timeout: float, what: str, step=0.05):
    """Call ``predicate`` until it returns a truthy value; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


# -- Kafka helpers ------------------------------------------------------------------------


def produce(producer, topic: str, value: bytes | None, key: bytes | None, headers=None):
    """Produce one message and wait for its acknowledgement; returns (partition, offset)."""
    delivered = []
    producer.produce(
        topic,
        value=value,
        key=key,
        headers=headers,
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    producer.flush(10)
    assert len(delivered) == 1 and delivered[0][0] is None, delivered
    return delivered[0][1].partition(), delivered[0][1].offset()


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list:
    """Every message of ``topic`` up to its current end (all partitions)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out, deadline = [], time.monotonic() + timeout
        while sum(ends.values()) > len(out) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                out.append(message)
        return out
    finally:
        consumer.close()


def committed_and_end(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """``partition -> (committed offset of the group, end offset)``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        return {
            p: (
                committed[p],
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1],
            )
            for p in partitions
        }
    finally:
        consumer.close()


# ------------------------------------------------------------------ the worker tests' stream

#: Consumer-group timings that let a test's group settle within seconds.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
MAIN_VISITS = [
    Visit(v, 150.0 + 0.2 * (v - 1), 2.0, n_snaps=2 if v == 3 else 1) for v in (1, 2, 3, 4, 5)
]
FEW_STARS = Visit(6, 151.2, 2.0, n_stars=2, detectors=(0,))
WRONG_ANNOUNCEMENT = Visit(8, 165.0, 2.0, announced_ra=150.0, detectors=(0,))
HALF_VISIT = Visit(9, 151.6, 2.0, n_snaps=2, detectors=(2,))
SNAP_WAIT = 2.0  # [s]
