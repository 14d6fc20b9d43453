"""Render a planned night: snap files, a reference catalog covering it, and the manifest.

:func:`simulate_night` writes under ``output``:

- ``raw/<visit>/<visit>_<detector>_<snap>.fits``: one afw-layout exposure per visit,
  detector and snap, in counts, with the header WCS (pointing error included);
- ``camera.json``: the camera (detectors resized to ``--size`` when given), which the
  worker needs for its preload footprints;
- ``refcat/``: the sharded reference catalog of every simulated star and galaxy in
  every band of the night (``refcat_source.parquet`` is its input);
- ``manifest.json``: the :class:`~promptcal.night.plan.NightManifest`.

Each (visit, detector) is placed where the camera puts that detector for the visit's
boresight and rotation, so the predicted preload footprint contains it. Stars are
drawn in the visit's band; each gets a colour so that its fluxes in the other bands
follow (``m_g = m_r + 0.6 c``, ``m_i = m_r − 0.3 c``, ``m_z = m_r − 0.45 c`` …), and the
reference catalog carries all bands.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack
from astropy.time import Time

from promptcal.core.camera import Camera, load_camera, predict_detector_wcs, write_camera
from promptcal.core.errors import InvalidInputError
from promptcal.night.manifest import ExposureRecord, NightManifest, VisitRecord, write_manifest
from promptcal.night.plan import NightConfig, plan_night

#: Colour slope of each band relative to r, per unit colour c (c ~ U(0.2, 1.2)) [mag].
BAND_COLOUR = {"u": 1.8, "g": 0.6, "r": 0.0, "i": -0.3, "z": -0.45, "y": -0.55}


def resized_camera(camera: Camera, width: int | None, height: int | None) -> Camera:
    """The camera with every detector ``width × height`` (same centres and scale)."""
    if width is None and height is None:
        return camera
    detectors = tuple(
        d.model_copy(update={"width": width or d.width, "height": height or d.height})
        for d in camera.detectors
    )
    return camera.model_copy(update={"detectors": detectors})


def exposure_seed(night_seed: int, visit_index: int, detector: int) -> int:
    """Seed of one (visit, detector), independent of the others."""
    return int(np.random.SeedSequence([night_seed, visit_index, detector]).generate_state(1)[0])


def _sky_config(config: NightConfig, camera: Camera, visit: VisitRecord, detector: int):
    from promptcal.simulate import SkyConfig

    det = camera.detector(detector)
    wcs = predict_detector_wcs(
        camera, detector, visit.boresight_ra, visit.boresight_dec, visit.rotation_angle
    )
    ra, dec = wcs.pixel_to_world_values((det.width - 1) / 2, (det.height - 1) / 2)
    mpx = det.width * det.height / 1e6
    n_stars = max(80, round(config.star_density * mpx))
    pixel_scale = camera.detector_pixel_scale(detector)
    fwhm = visit.seeing / pixel_scale
    mid = visit.start_time + dt.timedelta(seconds=0.5 * visit.exposure_time * visit.n_snaps)
    return SkyConfig(
        width=det.width,
        height=det.height,
        exposure_id=visit.visit,
        detector_id=detector,
        detector_name=det.name,
        band=visit.band,
        exposure_time=visit.exposure_time * visit.n_snaps,
        mjd=float(Time(mid).tai.mjd),
        n_stars=n_stars,
        star_mag_range=config.star_mag_range,
        star_flux_power=config.star_flux_power,
        psf_fwhm=fwhm,
        psf_fwhm_max=1.05 * fwhm,  # a slight focus gradient across the detector
        psf_variation="xy",
        background=visit.sky,
        calibration=visit.calibration,
        ra=float(ra) % 360.0,
        dec=float(dec),
        pixel_scale=pixel_scale,
        rotation=visit.rotation_angle,
        sip_order=2,
        sip_amplitude=0.5,
        n_galaxies=round(config.galaxy_fraction * n_stars),
        n_cosmic_rays=round(config.cosmic_rays_per_mpx * mpx),
        n_snaps=visit.n_snaps,
    )


def refcat_rows(truth: Table, band: str, bands: tuple[str, ...], rng, id_offset: int) -> Table:
    """Reference rows of one exposure's truth in every band of the night."""
    from promptcal.simulate import refcat_table_from_truth

    table = refcat_table_from_truth(truth, band)
    table["id"] = np.asarray(table["id"], np.int64) + id_offset
    colour = rng.uniform(0.2, 1.2, len(table))
    flux = np.asarray(table[f"{band}_flux"], np.float64)
    rel_err = np.asarray(table[f"{band}_fluxErr"], np.float64) / flux
    for other in bands:
        if other == band:
            continue
        dm = (BAND_COLOUR.get(other, 0.0) - BAND_COLOUR.get(band, 0.0)) * colour
        table[f"{other}_flux"] = flux * 10.0 ** (-0.4 * dm)
        table[f"{other}_fluxErr"] = table[f"{other}_flux"] * rel_err
    return table


# Long: a linear rendering loop over visits and detectors plus the manifest, half of it
# docstring; nothing in it is reused elsewhere.
def simulate_night(config: NightConfig, output: str | os.PathLike[str], *, progress=None) -> Path:
    """Simulate and write a night; returns the path of ``manifest.json``.

    Parameters
    ----------
    config : NightConfig
        The night.
    output : path
        Directory to write (created; existing files of the same names are replaced).
    progress : callable, optional
        ``progress(done, total)`` after each (visit, detector).
    """
    from promptcal.io import write_exposure
    from promptcal.refcat import build_refcat
    from promptcal.simulate import simulate_exposure

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    camera = resized_camera(load_camera(config.camera), config.width, config.height)
    detectors = list(config.detectors or [d.id for d in camera.detectors])
    for det in detectors:
        camera.detector(det)  # unknown ids fail before any work
    instrument = config.instrument or camera.name
    visits = plan_night(config, camera)
    write_camera(camera, out / "camera.json")
    exposures: list[ExposureRecord] = []
    tables: list[Table] = []
    total, done = len(visits) * len(detectors), 0
    for index, visit in enumerate(visits):
        for det in detectors:
            seed = exposure_seed(config.seed, index, det)
            sim = simulate_exposure(_sky_config(config, camera, visit, det), seed=seed)
            rng = np.random.default_rng(seed)
            offset = (index * 1000 + det) * 1_000_000  # unique reference ids per exposure
            tables.append(refcat_rows(sim.truth, visit.band, config.bands, rng, offset))
            for snap_index, snap in enumerate(sim.snaps):
                rel = Path("raw") / str(visit.visit) / f"{visit.visit}_{det:03d}_{snap_index}.fits"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                write_exposure(snap, out / rel)
                opened = visit.start_time + dt.timedelta(seconds=snap_index * visit.exposure_time)
                closed = opened + dt.timedelta(seconds=visit.exposure_time)
                exposures.append(
                    ExposureRecord(
                        visit=visit.visit,
                        detector=det,
                        snap=snap_index,
                        uri=rel.as_posix(),
                        mid_exposure_time=opened + (closed - opened) / 2,
                        ready_time=closed + dt.timedelta(seconds=config.readout_time),
                        band=visit.band,
                        boresight_ra=visit.boresight_ra,
                        boresight_dec=visit.boresight_dec,
                        rotation_angle=visit.rotation_angle,
                        seed=seed,
                    )
                )
            done += 1
            if progress is not None:
                progress(done, total)
    if not tables:
        raise InvalidInputError("the night has no exposures")
    source = out / "refcat_source.parquet"
    vstack(tables).write(source, format="parquet", overwrite=True)
    build_refcat(
        source,
        out / "refcat",
        ra_col="ra",
        dec_col="dec",
        id_col="id",
        bands={b: (f"{b}_flux", "nJy") for b in config.bands},
        band_errors={b: f"{b}_fluxErr" for b in config.bands},
        overwrite=True,
    )
    manifest = NightManifest(
        instrument=instrument,
        camera="camera.json",
        refcat="refcat",
        next_visit_lead=config.next_visit_lead,
        config=config.model_dump(mode="json"),
        visits=tuple(visits),
        exposures=tuple(sorted(exposures, key=lambda e: (e.ready_time, e.detector, e.snap))),
    )
    return write_manifest(manifest, out / "manifest.json")
