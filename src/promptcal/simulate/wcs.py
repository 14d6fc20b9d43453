"""True and header WCS of a simulated exposure.

Both are astropy WCS objects whose 0-based pixel coordinates are *parent*
coordinates (``wcs.pixel_to_world(x, y)`` with ``x, y`` as in the catalogs), so the
FITS ``CRPIX`` is the parent reference pixel + 1.

- Truth: TAN projection with the reference pixel at the bbox centre, CD matrix
  ``s · [[-cos θ, sin θ], [sin θ, cos θ]]`` (θ = position angle of the +y axis, north
  through east; θ = 0 is north up, east left), plus optional SIP distortion whose
  largest displacement over the four bbox corners equals ``sip_amplitude`` [px].
  The SIP pattern's shape is random (from the seed); inverse terms (AP, BP) of one
  order higher are fitted on a grid.
- Header: the truth moved by ``pointing_error`` at position angle
  ``pointing_error_angle`` (at the reference pixel) and rotated by ``rotation_error``;
  TAN only unless ``header_has_sip``.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS, Sip

from promptcal.simulate.config import SkyConfig


def bbox_center(config: SkyConfig) -> tuple[float, float]:
    """Parent (x, y) of the bbox centre [px]."""
    return config.x0 + 0.5 * (config.width - 1), config.y0 + 0.5 * (config.height - 1)


def cd_matrix(pixel_scale: float, rotation: float) -> np.ndarray:
    """CD matrix [deg/px] for a scale [arcsec/px] and +y position angle [deg]."""
    s = pixel_scale / 3600.0
    t = np.deg2rad(rotation)
    return s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])


def make_tan_wcs(crpix_parent, ra: float, dec: float, cd: np.ndarray, sip: Sip | None = None):
    """A TAN(-SIP) WCS in parent 0-based pixels with the given reference pixel [px]."""
    wcs = WCS(naxis=2)
    suffix = "-SIP" if sip is not None else ""
    wcs.wcs.ctype = ["RA---TAN" + suffix, "DEC--TAN" + suffix]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [crpix_parent[0] + 1.0, crpix_parent[1] + 1.0]
    wcs.wcs.cd = cd
    wcs.wcs.radesys = "ICRS"
    if sip is not None:
        wcs.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs


def _poly_terms(order: int, min_degree: int) -> list[tuple[int, int]]:
    return [(p, d - p) for d in range(min_degree, order + 1) for p in range(d + 1)]


def _poly_eval(coeffs: np.ndarray, u_: np.ndarray, v_: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u_, dtype=np.float64)
    for p in range(coeffs.shape[0]):
        for q in range(coeffs.shape[1]):
            if coeffs[p, q] != 0.0:
                out += coeffs[p, q] * u_**p * v_**q
    return out


def make_sip(config: SkyConfig, rng: np.random.Generator) -> Sip | None:
    """SIP terms of order ``sip_order`` scaled to ``sip_amplitude`` at the worst corner."""
    if config.sip_order == 0 or config.sip_amplitude == 0.0:
        return None
    order = config.sip_order
    cx, cy = bbox_center(config)
    a = np.zeros((order + 1, order + 1))
    b = np.zeros((order + 1, order + 1))
    for p, q in _poly_terms(order, 2):
        # Scale each term by the half-size so all orders contribute at the corner.
        norm = (config.width / 2.0) ** p * (config.height / 2.0) ** q
        a[p, q] = rng.normal() / norm
        b[p, q] = rng.normal() / norm
    corners_x = np.array([config.x0, config.x0 + config.width - 1] * 2, dtype=float) - cx
    corners_y = np.array([config.y0] * 2 + [config.y0 + config.height - 1] * 2, dtype=float) - cy
    disp = np.hypot(_poly_eval(a, corners_x, corners_y), _poly_eval(b, corners_x, corners_y))
    scale = config.sip_amplitude / disp.max()
    a *= scale
    b *= scale
    # Inverse (focal -> pixel) terms, one order higher, least squares on a grid.
    inv_order = order + 1
    gx, gy = np.meshgrid(
        np.linspace(config.x0 - 0.5, config.x0 + config.width - 0.5, 24) - cx,
        np.linspace(config.y0 - 0.5, config.y0 + config.height - 0.5, 24) - cy,
    )
    gx, gy = gx.ravel(), gy.ravel()
    fu = gx + _poly_eval(a, gx, gy)
    fv = gy + _poly_eval(b, gx, gy)
    terms = _poly_terms(inv_order, 1)
    design = np.stack([fu**p * fv**q for p, q in terms], axis=1)
    col_norm = np.abs(design).max(axis=0)
    sol_u, *_ = np.linalg.lstsq(design / col_norm, gx - fu, rcond=None)
    sol_v, *_ = np.linalg.lstsq(design / col_norm, gy - fv, rcond=None)
    ap = np.zeros((inv_order + 1, inv_order + 1))
    bp = np.zeros((inv_order + 1, inv_order + 1))
    for (p, q), cu, cv, nrm in zip(terms, sol_u, sol_v, col_norm, strict=True):
        ap[p, q] = cu / nrm
        bp[p, q] = cv / nrm
    return Sip(a, b, ap, bp, [cx + 1.0, cy + 1.0])


def make_wcs_pair(config: SkyConfig, rng: np.random.Generator) -> tuple[WCS, WCS]:
    """Return ``(truth_wcs, header_wcs)`` for ``config``."""
    center = bbox_center(config)
    sip = make_sip(config, rng)
    truth = make_tan_wcs(
        center, config.ra, config.dec, cd_matrix(config.pixel_scale, config.rotation), sip
    )
    pointing = SkyCoord(config.ra * u.deg, config.dec * u.deg, frame="icrs")
    header_pointing = pointing.directional_offset_by(
        config.pointing_error_angle * u.deg, config.pointing_error * u.arcsec
    )
    header = make_tan_wcs(
        center,
        float(header_pointing.ra.deg),
        float(header_pointing.dec.deg),
        cd_matrix(config.pixel_scale, config.rotation + config.rotation_error),
        sip if config.header_has_sip else None,
    )
    return truth, header
