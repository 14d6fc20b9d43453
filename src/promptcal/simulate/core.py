"""The synthetic-sky factory: :func:`simulate_exposure`."""

from __future__ import annotations

from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from promptcal.core.exposure import Detector, Exposure, Mask, VisitInfo
from promptcal.simulate.config import SkyConfig
from promptcal.simulate.detector import read_out
from promptcal.simulate.render import (
    aperture_blend,
    build_components,
    fwhm_at,
    optimal_snr,
    render,
    shape_matrix,
)
from promptcal.simulate.sky import child_rngs, draw_bad_columns, draw_cosmic_rays, draw_sources
from promptcal.simulate.truth import build_truth
from promptcal.simulate.wcs import make_wcs_pair

#: Rubin Observatory (Cerro Pachón), geodetic; given explicitly so no site lookup
#: (network) is needed.
RUBIN_LOCATION = EarthLocation.from_geodetic(
    lon=-70.749417 * u.deg, lat=-30.244639 * u.deg, height=2663.0 * u.m
)


@dataclass
class SimulatedExposure:
    """A simulated visit and everything known about it.

    Attributes
    ----------
    exposure : promptcal.core.exposure.Exposure
        The visit as read out [count]; with two snaps, their sum (image and
        variance summed, masks OR-ed).
    truth : astropy.table.Table
        One row per source (see :func:`promptcal.simulate.truth.build_truth`).
    truth_wcs : astropy.wcs.WCS
        The true WCS (parent 0-based pixels); ``exposure.wcs`` is the header WCS.
    noiseless : numpy.ndarray
        float32 source + sky model of the whole visit, before bleed, noise, cosmic
        rays, clipping and bad columns [count].
    config : SkyConfig
        The configuration simulated.
    seed : int
        The seed simulated.
    snaps : list of Exposure
        The readouts (one element, ``exposure`` itself, for a single snap).
    cosmic_rays : astropy.table.Table
        One row per track (see :func:`promptcal.simulate.sky.draw_cosmic_rays`).
    cosmic_ray_pixels : astropy.table.Table
        One row per CR pixel (``cr_id, snap, x, y, counts``).
    bad_columns : numpy.ndarray
        Parent x of the bad columns [px].
    """

    exposure: Exposure
    truth: Table
    truth_wcs: WCS
    noiseless: np.ndarray
    config: SkyConfig
    seed: int
    snaps: list[Exposure] = field(default_factory=list)
    cosmic_rays: Table = field(default_factory=Table)
    cosmic_ray_pixels: Table = field(default_factory=Table)
    bad_columns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def psf_fwhm_at(self, x, y) -> np.ndarray:
        """True PSF FWHM at parent ``(x, y)`` [px]."""
        return fwhm_at(self.config, x, y)

    def psf_moments_at(self, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """True Gaussian-equivalent second moments ``(Ixx, Iyy, Ixy)`` at ``(x, y)`` [px²].

        Exact for the Gaussian PSF; for Moffat these are the moments of the Gaussian
        of equal FWHM and ellipticity (the Moffat's own moments diverge for β <= 2).
        """
        sigma2 = (self.psf_fwhm_at(x, y) / (2.0 * np.sqrt(2.0 * np.log(2.0)))) ** 2
        s = shape_matrix(self.config.psf_e1, self.config.psf_e2)
        return sigma2 * s[0, 0], sigma2 * s[1, 1], sigma2 * s[0, 1]


def background_model(config: SkyConfig) -> np.ndarray:
    """float32 sky: ``background + gx (x - xc) + gy (y - yc)`` [count]."""
    cx = config.x0 + 0.5 * (config.width - 1)
    cy = config.y0 + 0.5 * (config.height - 1)
    row = config.background_gradient_x * (np.arange(config.width) + config.x0 - cx)
    col = config.background + config.background_gradient_y * (
        np.arange(config.height) + config.y0 - cy
    )
    return np.add.outer(col.astype(np.float32), row.astype(np.float32))


def _visit_info(config: SkyConfig, header_wcs: WCS, snap: int | None) -> VisitInfo:
    t_mid = Time(config.mjd, format="mjd", scale="tai")
    exposure_time = config.exposure_time
    exposure_id = config.exposure_id
    if snap is not None and config.n_snaps == 2:
        # Snaps back to back: mid-times at 1/4 and 3/4 of the visit.
        exposure_time = config.exposure_time / 2.0
        t_mid = t_mid + (snap - 0.5) * exposure_time * u.s
        exposure_id = config.exposure_id + snap
    ra, dec = (float(v) for v in header_wcs.wcs.crval)
    return VisitInfo(
        exposure_id=exposure_id,
        exposure_time=exposure_time,
        date=t_mid,
        observatory=RUBIN_LOCATION,
        boresight_ra_dec=(ra, dec),
        rotation_angle=config.rotation + config.rotation_error,
    )


# Long: draws every element of the synthetic sky in the documented order
# (docs/simulation.md); the seed stream depends on that order, so it stays in one place.
def simulate_exposure(config: SkyConfig | None = None, seed: int = 0) -> SimulatedExposure:
    """Simulate one visit (one or two snaps) deterministically from ``seed``.

    Parameters
    ----------
    config : SkyConfig, optional
        What to simulate (defaults: ``SkyConfig()``).
    seed : int
        Seed of the independent numpy Generators (see :func:`sky.child_rngs`).

    Returns
    -------
    SimulatedExposure
    """
    config = config or SkyConfig()
    rngs = child_rngs(seed)
    src = draw_sources(config, rngs)
    truth_wcs, header_wcs = make_wcs_pair(config, rngs["wcs"])
    cr_tracks, cr_pixels = draw_cosmic_rays(config, rngs["cosmic_rays"])
    bad_columns = draw_bad_columns(config, rngs["bad_columns"])

    xy0 = (config.x0, config.y0)
    noiseless = background_model(config)
    sky_at_src = noiseless_at(noiseless, xy0, src["x"], src["y"])
    comps = build_components(config, src)
    sources_only = np.zeros_like(noiseless)
    rendered = render(sources_only, xy0, comps, config.psf_supersample)
    peak = noiseless_at(sources_only, xy0, src["x"], src["y"]) + sky_at_src
    fwhm = fwhm_at(config, src["x"], src["y"])
    ap_radius = config.isolation_radius * (fwhm + np.where(src["is_galaxy"], src["hlr"], 0.0))
    own, in_aperture = aperture_blend(sources_only, xy0, comps, ap_radius, config.psf_supersample)
    with np.errstate(divide="ignore", invalid="ignore"):
        blend = np.where(own > 0, np.maximum(in_aperture - own, 0.0) / own, np.inf)
    noiseless += sources_only
    del sources_only

    # Expected variance of the whole visit (summed snaps) for the optimal S/N.
    read_var = config.n_snaps * (config.read_noise / config.gain) ** 2
    visit_var = noiseless / np.float32(config.gain) + np.float32(read_var)
    snr = optimal_snr(visit_var, xy0, comps, config.psf_supersample)
    del visit_var

    truth = build_truth(
        config, src, truth_wcs, fwhm=fwhm, rendered=rendered, snr=snr, peak=peak, blend=blend
    )
    detector = Detector(
        id=config.detector_id,
        name=config.detector_name,
        gain=config.gain,
        read_noise=config.read_noise,
        saturation=float("inf") if config.saturation is None else config.saturation,
    )

    snaps: list[Exposure] = []
    for snap in range(config.n_snaps):
        model = noiseless if config.n_snaps == 1 else noiseless * np.float32(0.5)
        image, variance, mask = read_out(
            model,
            config,
            rngs[f"noise{snap}"],
            cr_pixels=cr_pixels,
            snap=snap,
            bad_columns=bad_columns,
        )
        snaps.append(
            Exposure(
                image,
                variance,
                mask,
                xy0=xy0,
                wcs=header_wcs.deepcopy(),
                visit_info=_visit_info(config, header_wcs, snap),
                detector=detector,
                band=config.band,
                metadata={"SIM_SEED": int(seed), "SIM_CONFIG_HASH": config.config_hash()},
            )
        )
    if config.n_snaps == 1:
        exposure = snaps[0]
    else:
        exposure = Exposure(
            snaps[0].image + snaps[1].image,
            snaps[0].variance + snaps[1].variance,
            Mask(snaps[0].mask.array | snaps[1].mask.array, dict(snaps[0].mask.planes)),
            xy0=xy0,
            wcs=header_wcs.deepcopy(),
            visit_info=_visit_info(config, header_wcs, None),
            detector=detector,
            band=config.band,
            metadata=dict(snaps[0].metadata),
        )
    return SimulatedExposure(
        exposure=exposure,
        truth=truth,
        truth_wcs=truth_wcs,
        noiseless=noiseless,
        config=config,
        seed=int(seed),
        snaps=snaps,
        cosmic_rays=cr_tracks,
        cosmic_ray_pixels=cr_pixels,
        bad_columns=bad_columns,
    )


def noiseless_at(image: np.ndarray, xy0: tuple[int, int], x, y) -> np.ndarray:
    """Values of ``image`` at the pixels containing parent ``(x, y)`` (clamped to the image)."""
    ix = np.clip(np.rint(np.asarray(x)).astype(np.int64) - xy0[0], 0, image.shape[1] - 1)
    iy = np.clip(np.rint(np.asarray(y)).astype(np.int64) - xy0[1], 0, image.shape[0] - 1)
    return image[iy, ix].astype(np.float64)
