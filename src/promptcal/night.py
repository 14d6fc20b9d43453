"""A synthetic observing night: its plan, and the manifest that describes it on disk.

:func:`plan_night` turns a :class:`NightConfig` and a seed into a list of visits
(:class:`VisitRecord`): a pointing sequence, band changes (with a filter-change pause),
a seeing random walk, twilight and band-dependent sky, a transparency that drifts
(clouds), and one or two snaps per visit. :func:`promptcal.night_sim.simulate_night`
renders it (one FITS file per visit, detector and snap) and writes the
:class:`NightManifest` that ``promptcal replay`` reads.

Conventions
-----------
- Times are UTC (``datetime`` with ``tzinfo=UTC``); a visit's ``start_time`` is the
  shutter opening of its first snap, snaps follow back to back.
- Visit ids follow Rubin's ``YYYYMMDDsssss`` (day of observation, 5-digit sequence).
- Pointings walk east in RA at a fixed Dec, one field apart, so no two visits overlap
  on the sky and each star of the reference catalog belongs to exactly one exposure
  (the simulator draws independent stars per exposure).
- The true zero point of a visit is ``31.4 − 2.5 log10(calibration)`` with
  ``calibration = calibration_base[band] / transparency`` [nJy/count] (AB, 31.4 =
  2.5 log10(3631e9)).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .camera import Camera
from .config import Config
from .errors import InvalidInputError

#: Version of the manifest format written by :func:`write_manifest`.
MANIFEST_VERSION = 1


class NightConfig(Config):
    """What :func:`plan_night` plans and :func:`promptcal.night_sim.simulate_night` draws."""

    camera: str = Field("toy3x3", description="Camera: built-in name or JSON file [-].")
    instrument: str | None = Field(
        None, description="Instrument name in messages and product paths; None: camera name [-]."
    )
    n_visits: int = Field(10, ge=1, le=99_999, description="Visits in the night [-].")
    detectors: tuple[int, ...] | None = Field(
        None, description="Detector ids to simulate; None: every detector of the camera [-]."
    )
    width: int | None = Field(
        None, ge=64, le=8192, description="Detector width; None: the camera's [px]."
    )
    height: int | None = Field(
        None, ge=64, le=8192, description="Detector height; None: the camera's [px]."
    )
    seed: int = Field(0, ge=0, description="Seed of the whole night [-].")
    night_start: dt.datetime = Field(
        dt.datetime(2026, 2, 24, 1, 0, 0, tzinfo=dt.UTC),
        description="Shutter opening of the first visit (UTC) [-].",
    )
    visit_time: float = Field(30.0, gt=0, description="Open-shutter time of a visit [s].")
    snaps: Literal["1", "2", "mixed"] = Field(
        "mixed", description="Snaps per visit: 1, 2, or a random third of visits with 2 [-]."
    )
    overhead: float = Field(
        7.0, ge=0, description="Readout and slew between visits (shutter close to open) [s]."
    )
    readout_time: float = Field(
        2.0, ge=0, description="Shutter close to the snap's file in storage (image-ready) [s]."
    )
    next_visit_lead: float = Field(
        30.0, ge=20.0, description="next-visit is sent this long before the shutter opens [s]."
    )
    bands: tuple[str, ...] = Field(("g", "r", "i"), min_length=1, description="Bands in use [-].")
    visits_per_band: int = Field(5, ge=1, description="Visits before a filter change [-].")
    filter_change_time: float = Field(120.0, ge=0, description="Extra time of a change [s].")
    seeing_range: tuple[float, float] = Field(
        (0.6, 1.3), description="Seeing (PSF FWHM) bounds of the random walk [arcsec]."
    )
    seeing_step: float = Field(0.08, ge=0, description="Seeing random-walk step rms [arcsec].")
    transparency_range: tuple[float, float] = Field(
        (0.6, 1.0), description="Transparency bounds (1 = photometric) [-]."
    )
    star_density: float = Field(
        600.0, gt=0, description="Stars per detector area [1/Mpx] (at least 80 per detector)."
    )
    star_mag_range: tuple[float, float] = Field(
        (14.5, 20.5), description="Bright and faint star magnitudes in the visit's band [AB mag]."
    )
    star_flux_power: float = Field(
        1.5, description="Power-law index p of the star fluxes, dN/dF ∝ F^-p [-]."
    )
    galaxy_fraction: float = Field(0.1, ge=0, description="Galaxies per star [-].")
    cosmic_rays_per_mpx: float = Field(20.0, ge=0, description="Cosmic-ray tracks [1/Mpx].")
    dec: float = Field(-30.0, ge=-80, le=80, description="Declination of the fields [deg].")
    ra_start: float = Field(150.0, ge=0, lt=360, description="RA of the first field [deg].")


# -- the manifest ---------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VisitRecord(_Record):
    """One visit of the night, with the truth it was simulated from (None: archived)."""

    visit: int = Field(ge=0, description="Visit id (YYYYMMDDsssss).")
    group_id: str = Field(description="Observatory group id.")
    band: str = Field(description="Band.")
    boresight_ra: float = Field(ge=0, lt=360, description="Boresight RA [deg].")
    boresight_dec: float = Field(ge=-90, le=90, description="Boresight Dec [deg].")
    rotation_angle: float = Field(description="Sky rotation angle (rotation_system SKY) [deg].")
    start_time: dt.datetime = Field(description="Shutter opening of the first snap (UTC).")
    exposure_time: float = Field(gt=0, description="Open-shutter time per snap [s].")
    n_snaps: int = Field(ge=1, le=2, description="Snaps in the visit.")
    seeing: float | None = Field(None, gt=0, description="True PSF FWHM [arcsec].")
    sky: float | None = Field(None, ge=0, description="True sky level of the visit [count/px].")
    transparency: float | None = Field(None, gt=0, description="True transparency [-].")
    calibration: float | None = Field(None, gt=0, description="True calibration [nJy/count].")
    zero_point: float | None = Field(
        None, description="True zero point [AB mag] (31.4 - 2.5 log10 cal)."
    )


class ExposureRecord(_Record):
    """One snap file of one (visit, detector)."""

    visit: int = Field(ge=0, description="Visit id.")
    detector: int = Field(ge=0, description="Detector id.")
    snap: int = Field(ge=0, description="Snap index.")
    uri: str = Field(description="The file: a path relative to the manifest, or a URI.")
    mid_exposure_time: dt.datetime = Field(description="Middle of this snap (UTC).")
    ready_time: dt.datetime = Field(description="When the file is in storage (UTC).")
    band: str = Field(description="Band.")
    boresight_ra: float = Field(description="Boresight RA [deg].")
    boresight_dec: float = Field(description="Boresight Dec [deg].")
    rotation_angle: float = Field(description="Sky rotation angle [deg].")
    seed: int | None = Field(None, ge=0, description="Seed of the simulated (visit, detector).")
    pixel_scale: float | None = Field(
        None, gt=0, description="Pixel-scale hint [\"/px]; None: the camera's (archives set it)."
    )
    weight_uri: str | None = Field(None, description="Inverse-variance weight file, if any.")
    mask_uri: str | None = Field(None, description="Mask/DQ file, if any.")


class SkippedFile(_Record):
    """A file ``promptcal archive index`` could not use."""

    path: str = Field(description="The file, relative to the manifest when possible.")
    reason: str = Field(description="Why, in one line.")


class NightManifest(_Record):
    """Everything ``promptcal replay`` needs to replay a night (``manifest.json``)."""

    format_version: Literal[1] = Field(MANIFEST_VERSION, description="Format version.")
    instrument: str = Field(description="Instrument name.")
    camera: str = Field(description="Camera JSON file, relative to the manifest.")
    refcat: str = Field(description="Reference-catalog directory, relative to the manifest.")
    next_visit_lead: float = Field(ge=0, description="next-visit before shutter open [s].")
    config: dict = Field(description="The NightConfig simulated.")
    visits: tuple[VisitRecord, ...] = Field(description="Visits in time order.")
    exposures: tuple[ExposureRecord, ...] = Field(description="Snap files.")
    partition_key: Literal["detector", "visit-detector"] = Field(
        "detector",
        description="Kafka key of next-visit/image-ready: the detector (design default), or "
        "visit:detector so that a one-detector night spreads over the partitions.",
    )
    skipped: tuple[SkippedFile, ...] = Field(
        (), description="Files of the archive that were not indexed, with the reason."
    )

    def visit(self, visit: int) -> VisitRecord:
        """The record of one visit."""
        for record in self.visits:
            if record.visit == visit:
                return record
        raise InvalidInputError(f"visit {visit} is not in the manifest")


def write_manifest(manifest: NightManifest, path: str | os.PathLike[str]) -> Path:
    """Write ``manifest.json`` (indented JSON)."""
    path = Path(path)
    path.write_text(manifest.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return path


def read_manifest(path: str | os.PathLike[str]) -> tuple[NightManifest, Path]:
    """Read a manifest; returns it and its directory (where relative paths start).

    ``path`` may be the file or the directory that holds ``manifest.json``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return NightManifest.model_validate(data), path.parent.resolve()
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"night manifest {path}: {exc}") from exc


def resolve_uri(uri: str, base: Path) -> str:
    """``file://`` URI of a manifest entry (relative paths start at ``base``)."""
    if "://" in uri:
        return uri
    path = Path(uri)
    return (path if path.is_absolute() else base / path).resolve().as_uri()


# -- the plan ------------------------------------------------------------------------


def visit_id(day_obs: dt.date, sequence: int) -> int:
    """Rubin's visit id ``YYYYMMDDsssss``."""
    return int(f"{day_obs:%Y%m%d}{sequence:05d}")


def calibration_base(band: str) -> float:
    """Photometric calibration of a clear sky in ``band`` [nJy/count].

    Bluer bands collect fewer photons per nJy in this toy throughput model.
    """
    return {"u": 60.0, "g": 25.0, "r": 20.0, "i": 22.0, "z": 30.0, "y": 45.0}.get(band, 20.0)


def sky_base(band: str) -> float:
    """Dark-sky level of a 30 s visit in ``band`` [count/px]."""
    return {"u": 150.0, "g": 400.0, "r": 800.0, "i": 1300.0, "z": 1800.0, "y": 2000.0}.get(
        band, 800.0
    )


def field_radius_arcsec(camera: Camera, detectors: list[int], width: int | None, height):
    """Radius around the boresight that contains every chosen detector [arcsec]."""
    radius = 0.0
    for det_id in detectors:
        det = camera.detector(det_id)
        w, h = width or det.width, height or det.height
        half_diag_mm = 0.5 * math.hypot(w, h) * (det.pixel_size_um or camera.pixel_size_um) / 1e3
        centre_mm = math.hypot(det.center_x_mm, det.center_y_mm)
        radius = max(radius, centre_mm + half_diag_mm)
    return radius * camera.plate_scale_arcsec_per_mm


def plan_night(config: NightConfig, camera: Camera) -> list[VisitRecord]:
    """The visits of the night, deterministic in ``config.seed``.

    Returns
    -------
    list of VisitRecord
        In time order.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x6E69676874]))
    detectors = list(config.detectors or [d.id for d in camera.detectors])
    step = (2.0 * field_radius_arcsec(camera, detectors, config.width, config.height) + 60.0) / 3600
    cos_dec = math.cos(math.radians(config.dec))
    lo_s, hi_s = config.seeing_range
    lo_t, hi_t = config.transparency_range
    seeing = float(rng.uniform(lo_s, 0.5 * (lo_s + hi_s)))
    transparency = hi_t
    start = config.night_start
    day_obs = (start - dt.timedelta(hours=12)).date()  # the night is named by its evening
    visits: list[VisitRecord] = []
    previous_band = None
    for i in range(config.n_visits):
        band = config.bands[(i // config.visits_per_band) % len(config.bands)]
        if previous_band is not None and band != previous_band:
            start += dt.timedelta(seconds=config.filter_change_time)
        previous_band = band
        n_snaps = {"1": 1, "2": 2}.get(config.snaps) or (2 if rng.random() < 1 / 3 else 1)
        seeing = float(np.clip(seeing + rng.normal(0.0, config.seeing_step), lo_s, hi_s))
        # Clouds come and go: a mean-reverting walk towards photometric.
        transparency = float(np.clip(transparency + rng.normal(-0.02, 0.06), lo_t, hi_t))
        elapsed = (start - config.night_start).total_seconds()
        twilight = 1.0 + 1.5 * math.exp(-elapsed / 1200.0)  # the sky darkens after dusk
        sky = sky_base(band) * twilight * float(rng.uniform(0.9, 1.1))
        sky *= config.visit_time / 30.0
        calibration = calibration_base(band) / transparency
        visits.append(
            VisitRecord(
                visit=visit_id(day_obs, i + 1),
                group_id=start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
                band=band,
                boresight_ra=(config.ra_start + i * step / cos_dec) % 360.0,
                boresight_dec=config.dec,
                rotation_angle=float(rng.uniform(-90.0, 90.0)),
                start_time=start,
                exposure_time=config.visit_time / n_snaps,
                n_snaps=n_snaps,
                seeing=seeing,
                sky=sky,
                transparency=transparency,
                calibration=calibration,
                zero_point=31.4 - 2.5 * math.log10(calibration),
            )
        )
        start += dt.timedelta(seconds=config.visit_time + config.overhead)
    return visits
