"""The streaming side of archived nights (no broker needed).

- the assembler holds a complete exposure for its next-visit until the worker has
  been idle for ``next_visit_wait`` (a backlog of next-visits keeps it waiting), and
  hands it out on the announcement; without the option nothing changes;
- the preload takes the pixel scale of the next-visit message: the hint's scale is the
  message's and its centre the boresight of a detector centred on the optical axis;
- ``next-visit``/``image-ready`` of an archive manifest carry the exposure's pointing,
  scale, weight and mask; a one-detector night is keyed ``visit:detector``;
- the report's sky offsets agree with astropy, and the solved-frame rules.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from worker_helpers import Visit, image_ready

from promptcal.core.camera import Camera, DetectorGeometry
from promptcal.night.manifest import ExposureRecord, NightManifest, VisitRecord
from promptcal.replay.jobs import build_jobs, image_ready_message, next_visit_message
from promptcal.report.pointing import (
    PointingRow,
    consecutive_steps,
    judge,
    sky_offset,
    split_at_gaps,
)
from promptcal.service.assembler import ReceivedSnap, SnapAssembler
from promptcal.service.preload import Preloader


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _snap(visit: int, offset: int) -> ReceivedSnap:
    message = image_ready(Visit(visit, 150.0, 2.0, n_snaps=1), 0, 0, Path("x"))
    return ReceivedSnap(message, ("ir", 0, offset))


def test_complete_exposures_wait_for_their_next_visit_until_idle():
    clock = FakeClock()
    assembler = SnapAssembler(30.0, clock=clock, next_visit_wait=5.0)
    instrument = _snap(1, 0).message.instrument
    assert assembler.add(_snap(1, 0)) is None  # complete, but not announced: held
    assert assembler.add(_snap(2, 1)) is None
    assert assembler.seconds_to_next_expiry() == pytest.approx(5.0)
    clock.now += 4.0
    held = assembler.announce(instrument, 1, 0)  # its next-visit came: hand it out
    assert held is not None and held.visit == 1 and not held.expired
    clock.now += 4.0  # 8 s after exposure 2 completed, but only 4 s since a message
    assert assembler.expired() == []
    clock.now += 1.01
    (late,) = assembler.expired()
    assert late.visit == 2 and not late.expired  # all snaps are there: not "expired"
    # An announced exposure is handed out as soon as its snaps are in.
    assert assembler.announce(instrument, 3, 0) is None
    done = assembler.add(_snap(3, 2))
    assert done is not None and done.visit == 3
    # Without the option the assembler never holds.
    plain = SnapAssembler(30.0, clock=clock)
    assert plain.add(_snap(4, 3)) is not None


def _camera() -> Camera:
    det = DetectorGeometry(
        id=0, name="D0", width=650, height=500, center_x_mm=0.0, center_y_mm=0.0, saturation=4095
    )
    return Camera(name="Archive", pixel_scale_arcsec=5.0, detectors=(det,))


class _Loader:
    """Refcat loader stand-in: records the region asked for."""

    def shards_for_region(self, ra, dec, margin_deg):
        self.region = (np.asarray(ra), np.asarray(dec), margin_deg)
        return [1, 2]

    def preload(self, shards):
        return len(shards)


def _manifest(tmp_path, scale: float | None) -> NightManifest:
    start = dt.datetime(2017, 12, 20, 1, 33, 43, tzinfo=dt.UTC)
    visit = VisitRecord(
        visit=2017121948823, group_id="g", band="Clear", boresight_ra=31.3, boresight_dec=46.7,
        rotation_angle=0.0, start_time=start, exposure_time=60.0, n_snaps=1,
    )  # fmt: skip
    exposure = ExposureRecord(
        visit=visit.visit, detector=0, snap=0, uri="a.fits",
        mid_exposure_time=start + dt.timedelta(seconds=30),
        ready_time=start + dt.timedelta(seconds=62),
        band="Clear", boresight_ra=31.25, boresight_dec=46.74, rotation_angle=0.0,
        pixel_scale=scale, weight_uri="a.weight.fits", mask_uri=None,
    )  # fmt: skip
    return NightManifest(
        instrument="Archive", camera="camera.json", refcat="refcat", next_visit_lead=30.0,
        config={}, visits=(visit,), exposures=(exposure,), partition_key="visit-detector",
    )  # fmt: skip


def test_next_visit_carries_the_exposures_pointing_and_scale_to_the_hint(tmp_path):
    manifest = _manifest(tmp_path, scale=5.2)
    (job,) = build_jobs(manifest)
    message = next_visit_message(manifest.instrument, job, 1.0)
    # The exposure's own pointing (the detector's centre), not the visit's.
    assert (message.boresight_ra, message.boresight_dec, message.pixel_scale) == (
        31.25,
        46.74,
        5.2,
    )
    snap = image_ready_message(manifest.instrument, job, job.snaps[0], tmp_path, 1.0)
    assert snap.weight_uri == (tmp_path / "a.weight.fits").resolve().as_uri()
    assert snap.mask_uri is None
    loader = _Loader()
    record = Preloader(loader, _camera()).preload(message)
    assert record.ok and record.pixel_scale == 5.2
    assert record.center == pytest.approx((31.25, 46.74), abs=1e-9)
    # The footprint spans the frame at the message's scale (+ 30" padding each side).
    ra, dec, _ = loader.region
    height = SkyCoord(ra[1], dec[1], unit="deg").separation(SkyCoord(ra[2], dec[2], unit="deg"))
    assert height.arcsec == pytest.approx(500 * 5.2 + 60.0, rel=1e-3)
    # Without a scale in the message the camera's is used.
    plain = next_visit_message(manifest.instrument, build_jobs(_manifest(tmp_path, None))[0], 1.0)
    assert Preloader(loader, _camera()).preload(plain).pixel_scale == 5.0


def test_sky_offset_agrees_with_astropy():
    rng = np.random.default_rng(5)
    for _ in range(50):
        ra0, dec0 = rng.uniform(0, 360), rng.uniform(-80, 80)
        ra, dec = ra0 + rng.normal(0, 0.5) / math.cos(math.radians(dec0)), dec0 + rng.normal(0, 0.5)
        east, north, total = sky_offset(ra0, dec0, ra, dec)
        a, b = SkyCoord(ra0, dec0, unit="deg"), SkyCoord(ra, dec, unit="deg")
        assert total == pytest.approx(a.separation(b).arcmin, rel=1e-9, abs=1e-9)
        # The tangent-plane offsets point along the position angle.
        assert math.degrees(math.atan2(east, north)) % 360 == pytest.approx(
            a.position_angle(b).deg, abs=1e-6
        )


def test_solved_frame_rules():
    def row(**kw):
        base = dict(visit=1, detector=0, status="success", pixel_scale=5.163, n_matches=12,
                    median_residual_px=0.3)  # fmt: skip
        return PointingRow(**{**base, **kw})

    rows = [
        row(),
        row(pixel_scale=5.17),
        row(pixel_scale=5.10),  # 1.2 % off the median
        row(n_matches=7),
        row(median_residual_px=1.2),
        row(
            status="failed",
            failure="AstrometryError: no solution",
            pixel_scale=None,
            n_matches=None,
            median_residual_px=None,
        ),
        # Solved, then photometry found no unsaturated reference: solved, and failed.
        row(status="failed", failure="MatcherFailure: no photometric matches"),
    ]
    median = judge(rows)
    assert median == pytest.approx(5.163)
    assert [r.solved for r in rows] == [True, True, False, False, False, False, True]
    assert "> 1% from the median" in rows[2].reason
    assert rows[3].reason == "7 astrometric matches < 8"
    assert rows[4].reason.startswith("median match residual 1.2 px")
    assert rows[5].reason == "AstrometryError: no solution"
    assert rows[6].reason is None and rows[6].failure.startswith("MatcherFailure")


def test_steps_across_an_archive_gap_are_reported_apart():
    def row(minute, dec_arcmin):
        t = (
            f"2017-12-20T03:{minute:02d}:00Z"
            if minute < 60
            else f"2017-12-20T04:{minute - 60:02d}:00Z"
        )
        return PointingRow(1, 0, "success", time=t, ra=10.0, dec=dec_arcmin / 60.0, solved=True)

    # Every 3 min, 0.2' apart; then a 60-min gap with a 4.5' jump; then 3 min again.
    rows = [row(0, 0.0), row(3, 0.2), row(6, 0.4), row(66, 4.9), row(69, 5.1)]
    steps, gaps = split_at_gaps(consecutive_steps(rows))
    assert max(d for d, _, _ in steps) == pytest.approx(0.2, abs=1e-6)
    ((distance, minutes, after),) = gaps
    assert distance == pytest.approx(4.5, abs=1e-6) and minutes == pytest.approx(60.0)
    assert after is rows[3]
