"""Named benchmark skies: ``legacy``, ``moffat``, ``gaussian`` and ``crowded``.

``legacy`` is the sky ``scripts/bench_core.py`` always measured (4096×4072, 3,000
stars of 3,000–3×10⁵ counts with dN/dF ∝ F⁻², FWHM 3.5 px Gaussian, nothing
saturated), kept for continuity. The others look like a post-ISR LSST detector
(issue 13):

- 4072×4000 px at 0.2″/px, sky 1,000 counts with a gentle gradient;
- 3,000 stars with fluxes log-uniform from S/N ~5 (computed for the PSF at the
  detector centre) up to 3×10⁶ counts, so the brightest ~10% saturate: their cores
  read the saturation level with ``SAT`` set and the excess charge bleeds along
  columns (:mod:`promptcal.simulate.detector`);
- a Moffat (β 2.5) or Gaussian PSF whose FWHM grows from 3.2 px at one corner to
  4.0 px at the opposite one, slightly elliptical;
- 300 exponential galaxies (a tenth of the stars), 150 cosmic-ray tracks of 1–12 px
  (fewer on a smaller image), two bad columns;
- SIP distortion of 2 px at the worst corner; the header WCS (TAN only) is off by
  20″ and rotated by 0.5°;
- a reference catalog of the true stars only (no galaxies), with 0.02 mag scatter.

``crowded`` is the Moffat sky with 18,000 stars and 2,000 galaxies (a ninth); its star counts
rise towards faint fluxes as Galactic star counts do (dN/dF ∝ F⁻¹·⁷⁵, i.e. about ×2
per magnitude), so it has about as many saturated stars as ``moffat`` but six times
the faint ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from promptcal.simulate.config import SkyConfig
from promptcal.simulate.render import FWHM_PER_SIGMA, sky_sigma

#: Names accepted by :func:`benchmark_sky`, the default first.
BENCH_SKIES = ("moffat", "gaussian", "crowded", "legacy")


@dataclass(frozen=True)
class BenchSky:
    """A named benchmark sky: what to simulate and how to build its reference catalog.

    Attributes
    ----------
    name : str
        One of :data:`BENCH_SKIES`.
    config : SkyConfig
        The sky.
    refcat_options : dict
        Keyword arguments of :func:`promptcal.simulate.refcat_table_from_truth`.
    """

    name: str
    config: SkyConfig
    refcat_options: dict = field(default_factory=dict)


def effective_area(config: SkyConfig, fwhm: float) -> float:
    """Noise-equivalent area ``1 / Σ p²`` of the (circular) PSF of FWHM ``fwhm`` [px²].

    Gaussian: ``4π σ²``; Moffat(β, α): ``π α² (2β - 1) / (β - 1)²``.
    """
    if config.psf_model == "gaussian":
        return 4.0 * np.pi * (fwhm / FWHM_PER_SIGMA) ** 2
    beta = config.psf_beta
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return float(np.pi * alpha**2 * (2.0 * beta - 1.0) / (beta - 1.0) ** 2)


def flux_at_snr(config: SkyConfig, snr: float) -> float:
    """Total flux of a star with PSF-optimal S/N ``snr`` at the detector centre [count].

    Sky-limited: ``snr × sky_sigma × sqrt(effective area)`` with the mean FWHM.
    """
    fwhm_max = config.psf_fwhm if config.psf_fwhm_max is None else config.psf_fwhm_max
    fwhm = 0.5 * (config.psf_fwhm + fwhm_max)
    return float(snr * sky_sigma(config) * np.sqrt(effective_area(config, fwhm)))


def _legacy(overrides: dict) -> BenchSky:
    values = {
        "width": 4096,
        "height": 4072,
        "n_stars": 3000,
        "star_flux_min": 3000.0,
        "psf_fwhm": 3.5,
        "n_cosmic_rays": 50,
        **overrides,
    }
    values.setdefault("n_galaxies", values["n_stars"] // 15)
    return BenchSky("legacy", SkyConfig(**values), {})


def _realistic(name: str, overrides: dict) -> BenchSky:
    crowded = name == "crowded"
    n_stars = overrides.get("n_stars", 18000 if crowded else 3000)
    area = overrides.get("width", 4072) * overrides.get("height", 4000) / (4072 * 4000)
    values = {
        "width": 4072,
        "height": 4000,
        "n_stars": n_stars,
        "n_galaxies": round(n_stars / (9 if crowded else 10)),
        "star_flux_max": 3.0e6,
        "star_flux_power": 1.75 if crowded else 1.0,
        "psf_model": "gaussian" if name == "gaussian" else "moffat",
        "psf_fwhm": 3.2,
        "psf_fwhm_max": 4.0,
        "psf_variation": "xy",
        "psf_beta": 2.5,
        "psf_e1": 0.02,
        "psf_e2": -0.015,
        "background": 1000.0,
        "background_gradient_x": 0.005,
        "background_gradient_y": -0.004,
        "galaxy_flux_max": 2.0e5,
        "n_cosmic_rays": round(150 * area),
        "cr_length_max": 12.0,
        "n_bad_columns": 2,
        "sip_order": 3,
        "sip_amplitude": 2.0,
        "pointing_error": 20.0,
        "rotation_error": 0.5,
        **overrides,
    }
    if "star_flux_min" not in values:
        values["star_flux_min"] = flux_at_snr(SkyConfig(**values), 5.0)
    refcat = {"include_galaxies": False, "mag_scatter": 0.02, "seed": 1}
    return BenchSky(name, SkyConfig(**values), refcat)


def benchmark_sky(name: str = "moffat", **overrides) -> BenchSky:
    """The benchmark sky ``name`` with any :class:`SkyConfig` field overridden.

    Parameters
    ----------
    name : str
        One of :data:`BENCH_SKIES`.
    **overrides
        :class:`SkyConfig` fields (e.g. ``width``, ``n_stars``, ``ra``). For the
        realistic skies ``star_flux_min`` defaults to S/N 5 of the resulting config.

    Returns
    -------
    BenchSky
    """
    if name not in BENCH_SKIES:
        raise ValueError(f"unknown benchmark sky {name!r}; expected one of {BENCH_SKIES}")
    if name == "legacy":
        return _legacy(overrides)
    return _realistic(name, overrides)
