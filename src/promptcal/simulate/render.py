"""PSF and galaxy profiles, turned into components for :mod:`promptcal.kernels.render`.

Conventions
-----------
- FWHM is the *geometric-mean* FWHM: for an elliptical PSF, the FWHM of the circular
  profile with the same determinant of the second-moment (Gaussian) or shape (Moffat)
  matrix.
- Ellipticity (e1, e2) is the distortion ``(Ixx - Iyy) / T``, ``2 Ixy / T`` of a
  unit-determinant shape matrix ``S = [[1 + e1, e2], [e2, 1 - e1]] / sqrt(1 - e²)``.
- Gaussian: covariance ``σ² S``, ``σ = FWHM / (2 sqrt(2 ln 2))``, normalised
  analytically (``amp = F / (2π σ²)``); sampled at pixel centres the sum equals the
  integral to < 1e-5 for FWHM >= 2 px.
- Moffat: ``amp (1 + dᵀ S⁻¹ d / α²)^-β`` with ``α = FWHM / (2 sqrt(2^(1/β) - 1))`` and the
  analytic normalisation of the infinite profile, ``amp = F (β - 1) / (π α²)``. The
  stamp radius encloses all but ``moffat_wing_fraction`` of the flux (up to the stamp
  cap), so the image holds ``F`` minus that wing; the truth table reports the exact
  rendered sum (``rendered_flux``).
- Galaxies: a Sersic profile approximated by a mixture of Gaussians (fitted once per
  index by non-negative least squares, rescaled to the exact half-light radius), each
  component convolved with a Gaussian of the local PSF FWHM and ellipticity (exact for
  the Gaussian PSF, an approximation for Moffat).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq, nnls
from scipy.special import gammaincinv

from promptcal.kernels.render import render_sources
from promptcal.simulate.config import SkyConfig

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def fwhm_at(config: SkyConfig, x, y) -> np.ndarray:
    """PSF FWHM at parent positions ``(x, y)`` [px] (linear in the normalised coordinates)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if config.psf_fwhm_max is None:
        return np.full(np.broadcast(x, y).shape, config.psf_fwhm)
    u = (x - config.x0) / max(config.width - 1, 1)
    v = (y - config.y0) / max(config.height - 1, 1)
    t = {"x": u + 0.0 * v, "y": v + 0.0 * u, "xy": 0.5 * (u + v)}[config.psf_variation]
    return config.psf_fwhm + (config.psf_fwhm_max - config.psf_fwhm) * t


def shape_matrix(e1: float, e2: float) -> np.ndarray:
    """Unit-determinant shape matrix of ellipticity (e1, e2)."""
    k = np.sqrt(1.0 - e1 * e1 - e2 * e2)
    return np.array([[1.0 + e1, e2], [e2, 1.0 - e1]]) / k


def moffat_alpha(fwhm, beta: float):
    """Moffat core width α for a FWHM [px]."""
    return np.asarray(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


@lru_cache(maxsize=16)
def sersic_mixture(n: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture of a circular Sersic profile with half-light radius 1.

    Returns
    -------
    weights : numpy.ndarray
        Flux fraction of each component (sum 1).
    variances : numpy.ndarray
        Variance of each component [hlr²].
    """
    if abs(n - 0.5) < 1e-9:
        return np.array([1.0]), np.array([1.0 / (2.0 * np.log(2.0))])
    b = gammaincinv(2.0 * n, 0.5)
    r = np.linspace(1e-3, 8.0, 4000)
    profile = np.exp(-b * (r ** (1.0 / n) - 1.0))
    variances = np.logspace(-4.5, 1.0, 14)
    design = np.exp(-0.5 * r[:, None] ** 2 / variances[None, :])
    # Flux-weighted fit (area element r dr), plus a core term so the centre is not ignored.
    w = np.sqrt(r) + 0.05
    amps, _ = nnls(design * w[:, None], profile * w, maxiter=2000)
    keep = amps > 0
    weights = amps[keep] * 2.0 * np.pi * variances[keep]
    weights /= weights.sum()
    variances = variances[keep]

    def enclosed(radius: float) -> float:
        return float(np.sum(weights * (1.0 - np.exp(-0.5 * radius**2 / variances)))) - 0.5

    r_half = brentq(enclosed, 1e-4, 50.0)
    return weights, variances / r_half**2


@dataclass
class Components:
    """Flat component arrays plus per-source stamp parameters (see the kernel)."""

    src_start: np.ndarray
    xc: np.ndarray
    yc: np.ndarray
    radius: np.ndarray
    ss_radius: np.ndarray
    amp: np.ndarray
    qa: np.ndarray
    qb: np.ndarray
    qc: np.ndarray
    kind: np.ndarray
    beta: np.ndarray


def sky_sigma(config: SkyConfig) -> float:
    """Lowest per-pixel sky noise of one visit [count], floored at 1 count."""
    bg_min = config.background - abs(config.background_gradient_x) * config.width / 2
    bg_min -= abs(config.background_gradient_y) * config.height / 2
    var = max(bg_min, 0.0) / config.gain + config.n_snaps * (config.read_noise / config.gain) ** 2
    return max(float(np.sqrt(var)), 1.0)


def _gaussian_radius(amp, sigma_max, threshold):
    """Radius where a Gaussian of peak ``amp`` falls below ``threshold``, at least 4σ [px]."""
    ratio = np.maximum(amp / threshold, 1.0)
    return sigma_max * np.maximum(np.sqrt(2.0 * np.log(ratio)), 4.0)


def build_components(config: SkyConfig, src: dict[str, np.ndarray]) -> Components:
    """Components of every source: stars first-class, galaxies as Gaussian mixtures.

    ``src`` holds per-source arrays ``x, y, flux, is_galaxy, hlr, axis_ratio, pa``.
    """
    n = len(src["x"])
    fwhm = fwhm_at(config, src["x"], src["y"])
    sigma = fwhm / FWHM_PER_SIGMA
    shape = shape_matrix(config.psf_e1, config.psf_e2)
    inv_shape = np.linalg.inv(shape)
    stretch = np.sqrt(np.linalg.eigvalsh(shape).max())
    threshold = config.stamp_threshold * sky_sigma(config)
    cap = float(config.max_stamp_radius)
    weights, variances = sersic_mixture(float(config.galaxy_sersic_index))

    n_comp = np.where(src["is_galaxy"], len(weights), 1)
    src_start = np.zeros(n + 1, dtype=np.int64)
    src_start[1:] = np.cumsum(n_comp)
    m = int(src_start[-1])
    amp = np.empty(m)
    qa = np.empty(m)
    qb = np.empty(m)
    qc = np.empty(m)
    kind = np.zeros(m, dtype=np.int64)
    beta = np.full(m, config.psf_beta)
    radius = np.empty(n)

    star = ~src["is_galaxy"]
    cs = src_start[:-1][star]
    flux = src["flux"][star]
    if config.psf_model == "gaussian":
        s2 = sigma[star] ** 2
        amp[cs] = flux / (2.0 * np.pi * s2)
        qa[cs], qb[cs], qc[cs] = inv_shape[0, 0] / s2, inv_shape[0, 1] / s2, inv_shape[1, 1] / s2
        radius[star] = _gaussian_radius(amp[cs], sigma[star] * stretch, threshold)
    else:
        b = config.psf_beta
        alpha = moffat_alpha(fwhm[star], b)
        a2 = alpha**2
        amp[cs] = flux * (b - 1.0) / (np.pi * a2)
        qa[cs], qb[cs], qc[cs] = inv_shape[0, 0] / a2, inv_shape[0, 1] / a2, inv_shape[1, 1] / a2
        kind[cs] = 1
        ratio = np.maximum(amp[cs] / threshold, 1.0)
        r_noise = alpha * stretch * np.sqrt(ratio ** (1.0 / b) - 1.0)
        r_wing = alpha * stretch * np.sqrt(config.moffat_wing_fraction ** (1.0 / (1.0 - b)) - 1.0)
        radius[star] = np.maximum(np.maximum(r_noise, r_wing), 2.0 * fwhm[star])

    for i in np.nonzero(src["is_galaxy"])[0]:
        pa = np.deg2rad(src["pa"][i])
        rot = np.array([[np.cos(pa), -np.sin(pa)], [np.sin(pa), np.cos(pa)]])
        hlr = src["hlr"][i]
        gal = rot @ np.diag([hlr**2, (src["axis_ratio"][i] * hlr) ** 2]) @ rot.T
        psf_cov = sigma[i] ** 2 * shape
        r_max = 0.0
        for k, (w, v) in enumerate(zip(weights, variances, strict=True)):
            cov = v * gal + psf_cov
            c = src_start[i] + k
            det = np.linalg.det(cov)
            inv = np.linalg.inv(cov)
            amp[c] = src["flux"][i] * w / (2.0 * np.pi * np.sqrt(det))
            qa[c], qb[c], qc[c] = inv[0, 0], inv[0, 1], inv[1, 1]
            sig_max = np.sqrt(np.linalg.eigvalsh(cov).max())
            if w >= 0.01:
                r_k = _gaussian_radius(amp[c], sig_max, threshold)
            else:
                r_k = sig_max * np.sqrt(2.0 * np.log(max(amp[c] / threshold, 1.0)))
            r_max = max(r_max, float(r_k))
        radius[i] = r_max
    radius = np.minimum(radius, cap)
    ss_radius = np.where(config.psf_supersample > 1, 3.0 * fwhm, 0.0)
    xc = np.asarray(src["x"], dtype=np.float64)
    yc = np.asarray(src["y"], dtype=np.float64)
    return Components(src_start, xc, yc, radius, ss_radius, amp, qa, qb, qc, kind, np.asarray(beta))


def _render_kernel(target: np.ndarray, xy0, comps: Components, supersample: int, mode: int):
    """Call :func:`render_sources` on ``target`` (mode 0: add the model; 1: S/N² sums)."""
    return render_sources(
        target,
        int(xy0[0]),
        int(xy0[1]),
        comps.src_start,
        comps.xc,
        comps.yc,
        comps.radius,
        comps.ss_radius,
        int(supersample),
        comps.amp,
        comps.qa,
        comps.qb,
        comps.qc,
        comps.kind,
        comps.beta,
        target,
        mode,
    )


def render(image: np.ndarray, xy0: tuple[int, int], comps: Components, supersample: int):
    """Add all components to ``image`` in place; return each source's rendered sum [count]."""
    total, _ = _render_kernel(image, xy0, comps, supersample, 0)
    return total


def optimal_snr(
    variance: np.ndarray, xy0: tuple[int, int], comps: Components, supersample: int
) -> np.ndarray:
    """PSF-optimal S/N of each source: ``sqrt(Σ model² / variance)`` over its stamp [-]."""
    # The kernel only reads ``variance`` in mode 1; it doubles as the (unused) image.
    _, snr2 = _render_kernel(variance, xy0, comps, supersample, 1)
    return np.sqrt(snr2)


def aperture_blend(
    sources: np.ndarray,
    xy0: tuple[int, int],
    comps: Components,
    radius: np.ndarray,
    supersample: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Own model flux and all-source flux in a circular aperture around each source.

    Parameters
    ----------
    sources : numpy.ndarray
        The rendered image of all sources (no sky) [count].
    radius : numpy.ndarray
        Aperture radius per source [px].

    Returns
    -------
    own, total : numpy.ndarray
        Per source [count]; ``total - own`` is the light of other sources (minus the
        negligible own light beyond the stamp).
    """
    aperture = replace(comps, radius=np.asarray(radius, dtype=np.float64))
    own, total = render_sources(
        sources,
        int(xy0[0]),
        int(xy0[1]),
        aperture.src_start,
        aperture.xc,
        aperture.yc,
        aperture.radius,
        aperture.ss_radius,
        int(supersample),
        aperture.amp,
        aperture.qa,
        aperture.qb,
        aperture.qc,
        aperture.kind,
        aperture.beta,
        sources,
        2,
    )
    return own, total
