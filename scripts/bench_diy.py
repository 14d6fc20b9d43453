"""The peer of ``run()`` in ``bench_core.py``: a DIY calibration with sep and astropy.

What a small observatory would write around the two libraries, step by step as their
tutorials show them, with no PSF model, aperture corrections or summary statistics:

1. ``sep.Background`` (64-px meshes) and its subtraction;
2. ``sep.extract`` at 5σ of the global background RMS;
3. ``sep.flux_radius`` then ``sep.winpos`` (windowed centroids);
4. ``sep.sum_circle`` aperture fluxes (radius 1.5 × the median FWHM of the
   detections, from their half-light radii);
5. the reference catalog read from its file and cut to the field; the header WCS's
   pointing error found from a histogram of the offsets of all pairs of the 300
   brightest detections and references within 60″ (``search_around_sky``);
6. matching with ``match_to_catalog_sky`` and a TAN fit with
   ``astropy.wcs.utils.fit_wcs_from_points`` on the 600 brightest detections (against
   the 1,200 brightest references), then re-matching all at 1.5″ and a TAN-SIP
   (order 3) fit, re-matched once more at 0.5″ and refitted;
7. the zero point: median of reference flux over aperture flux of the matched,
   unsaturated detections with S/N > 20.
"""

from __future__ import annotations

import time

import numpy as np

#: sep's defaults (300,000 pixels, 1,024 sub-objects) overflow on saturated or crowded
#: 4k frames; a user who met "internal pixel buffer full" raises them.
SEP_PIXSTACK = 5_000_000
SEP_SUB_OBJECT_LIMIT = 8192
BRIGHT = 300  # detections and references used to find the pointing offset
BRIGHT_FIT = 600  # detections (and twice as many references) of the first TAN fit
SEARCH_RADIUS_ARCSEC = 60.0


def configure_sep() -> None:
    """Raise sep's global buffer limits (once per process)."""
    import sep

    sep.set_extract_pixstack(SEP_PIXSTACK)
    sep.set_sub_object_limit(SEP_SUB_OBJECT_LIMIT)


def _pointing_offset(det, ref, det_flux, ref_flux):
    """Offset (ΔRA cos δ, ΔDec) [arcsec] from detections to references: the peak of the
    2-D histogram of all bright pairs' offsets, refined by the mean within the peak bin."""
    import astropy.units as u

    d = det[np.argsort(-det_flux)[:BRIGHT]]
    r = ref[np.argsort(-ref_flux)[:BRIGHT]]
    i_d, i_r, _, _ = r.search_around_sky(d, SEARCH_RADIUS_ARCSEC * u.arcsec)
    dra, ddec = d[i_d].spherical_offsets_to(r[i_r])
    dra, ddec = dra.to_value(u.arcsec), ddec.to_value(u.arcsec)
    edges = np.arange(-SEARCH_RADIUS_ARCSEC, SEARCH_RADIUS_ARCSEC + 2.0, 2.0)
    hist, _, _ = np.histogram2d(dra, ddec, bins=[edges, edges])
    ix, iy = np.unravel_index(np.argmax(hist), hist.shape)
    near = (np.abs(dra - edges[ix] - 1.0) < 3.0) & (np.abs(ddec - edges[iy] - 1.0) < 3.0)
    return float(np.mean(dra[near])), float(np.mean(ddec[near]))


def _match_and_fit(x, y, sky, ref, radius_arcsec, sip_degree):
    import astropy.units as u
    from astropy.wcs.utils import fit_wcs_from_points

    index, distance, _ = sky.match_to_catalog_sky(ref)
    ok = distance < radius_arcsec * u.arcsec
    # Its docstring asks for 1-based pixels, but its fit evaluates the WCS with origin 0
    # (astropy 6-8), so 0-based positions give the WCS that pixel_to_world expects.
    wcs = fit_wcs_from_points(
        (x[ok], y[ok]), ref[index[ok]], projection="TAN", sip_degree=sip_degree
    )
    return wcs, int(ok.sum())


class _Laps:
    """CPU seconds of consecutive steps."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.process_time()

    def __call__(self, name: str) -> None:
        now = time.process_time()
        self.steps[name] = now - self._last
        self._last = now


def _sep_catalog(image, variance, lap: _Laps) -> dict:
    """Background, detection, windowed centroids and aperture fluxes (sep)."""
    import sep

    bkg = sep.Background(image)
    back = bkg.back()
    data = image - back
    lap("background")
    objects = sep.extract(data, 5.0, err=bkg.globalrms)
    lap("extract")
    x, y = objects["x"], objects["y"]
    r_half, _ = sep.flux_radius(
        data, x, y, 6.0 * objects["a"], 0.5, normflux=objects["flux"], subpix=5
    )
    xwin, ywin, _ = sep.winpos(data, x, y, 2.0 / 2.35 * r_half)
    # A Gaussian's half-light radius is half its FWHM.
    fwhm = 2.0 * float(np.median(r_half[(objects["flag"] == 0) & (r_half > 0)]))
    flux, flux_err, flag = sep.sum_circle(data, xwin, ywin, 1.5 * fwhm, var=variance)
    h, w = image.shape
    iy, ix = np.clip(y.astype(int), 0, h - 1), np.clip(x.astype(int), 0, w - 1)
    lap("winpos_and_aperture")
    return {
        "x": xwin,
        "y": ywin,
        "flux": flux,
        "flux_err": flux_err,
        "flag": flag | objects["flag"],
        "peak": objects["peak"] + back[iy, ix],  # with the sky, to compare to saturation
    }


def _solve_wcs(cat: dict, header_wcs, ref_sky, ref_flux):
    """Pointing offset, then TAN on the bright ends, then TAN-SIP on all, twice."""
    import astropy.units as u

    x, y, flux = cat["x"], cat["y"], cat["flux"]
    det_sky = header_wcs.pixel_to_world(x, y)
    dra, ddec = _pointing_offset(det_sky, ref_sky, flux, ref_flux)
    shifted = det_sky.spherical_offsets_by(dra * u.arcsec, ddec * u.arcsec)
    # First TAN fit on the bright ends only: all references are too dense for a 6″
    # radius in a crowded field (the header rotation still moves corners by ~5″).
    bright = np.argsort(-flux)[:BRIGHT_FIT]
    bright_refs = np.argsort(-ref_flux)[: 2 * BRIGHT_FIT]
    wcs, n = _match_and_fit(x[bright], y[bright], shifted[bright], ref_sky[bright_refs], 6.0, None)
    for radius in (1.5, 0.5):
        wcs, n = _match_and_fit(x, y, wcs.pixel_to_world(x, y), ref_sky, radius, 3)
    return wcs, n


def diy_calibrate(image, variance, header_wcs, refcat_table: str, band: str, saturation: float):
    """Calibrate one frame the DIY way; return the products a small observatory keeps.

    Parameters
    ----------
    image, variance : numpy.ndarray
        float32 pixels [count] and their variance [count²] (not modified).
    header_wcs : astropy.wcs.WCS
        The frame's header WCS (0-based pixels).
    refcat_table : str
        FITS table of the reference catalog (``ra, dec`` [deg], ``<band>_flux`` [nJy]).
    band : str
        Band of the reference fluxes.
    saturation : float
        Saturation level [count].

    Returns
    -------
    dict
        ``n_objects``, ``n_matched``, ``wcs`` (the TAN-SIP fit), ``calibration``
        [nJy/count], ``table`` (x, y, flux, flux_err, flag) and ``steps_cpu`` (CPU
        seconds of each step).
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    lap = _Laps()
    cat = _sep_catalog(image, variance, lap)
    refs = Table.read(refcat_table)
    ref_sky = SkyCoord(refs["ra"], refs["dec"], unit="deg")
    rx, ry = header_wcs.world_to_pixel(ref_sky)
    h, w = image.shape
    inside = (rx > -100) & (rx < w + 100) & (ry > -100) & (ry < h + 100)
    ref_sky, ref_flux = ref_sky[inside], np.asarray(refs[f"{band}_flux"])[inside]
    lap("refcat_read")
    wcs, n = _solve_wcs(cat, header_wcs, ref_sky, ref_flux)
    lap("match_and_fit")

    flux, flux_err, flag = cat["flux"], cat["flux_err"], cat["flag"]
    index, distance, _ = wcs.pixel_to_world(cat["x"], cat["y"]).match_to_catalog_sky(ref_sky)
    good = (distance < 0.5 * u.arcsec) & (flag == 0) & (cat["peak"] < 0.9 * saturation)
    good &= flux > 20.0 * flux_err
    calibration = float(np.median(ref_flux[index[good]] / flux[good])) if good.any() else None
    table = Table({k: cat[k] for k in ("x", "y", "flux", "flux_err", "flag")})
    lap("zero_point")
    return {
        "n_objects": len(flux),
        "n_matched": n,
        "n_photometric": int(good.sum()),
        "wcs": wcs,
        "calibration": calibration,
        "table": table,
        "steps_cpu": lap.steps,
    }
