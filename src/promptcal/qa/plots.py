"""QA figures of a calibration (``promptcal calibrate --plots``), drawn with matplotlib Agg.

- ``psf_grid.png``: the PSF model image at a 3 × 3 grid of detector positions;
- ``astrometry_residuals.png``: source − reference offsets of the astrometric matches
  as whiskers at the source positions;
- ``photometry_residuals.png``: calibrated − reference magnitude of the photometric
  matches against the reference magnitude.
"""

from __future__ import annotations

import os
from pathlib import Path

import astropy.units as u
import numpy as np

# The object-oriented Figure API (no pyplot) renders with Agg and keeps no global
# figure state, so workers and the CLI need no display and leak no figures.
from matplotlib.figure import Figure

from promptcal.pipeline.photometry import AB_ZERO_NJY, resolve_ref_band

#: Matplotlib writes the software version into PNGs; no dates, so files are repeatable.
_PNG_METADATA = {"Software": None}


def _save(fig: Figure, path: Path) -> Path:
    from promptcal.io.files import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata=_PNG_METADATA))
    return path


def plot_psf_grid(exposure, path: str | os.PathLike[str]) -> Path:
    """PSF model images (log stretch) at 3 × 3 positions across the detector."""
    x_min, y_min, x_max, y_max = exposure.bbox
    xs = np.linspace(x_min, x_max, 3)
    ys = np.linspace(y_min, y_max, 3)
    fig = Figure(figsize=(7, 7), layout="constrained")
    axes = fig.subplots(3, 3)
    for row, y in enumerate(ys[::-1]):  # top row = largest y, as the image is displayed
        for col, x in enumerate(xs):
            ax = axes[row, col]
            kernel = np.asarray(exposure.psf.kernel_image(x, y), float)
            peak = max(float(kernel.max()), 1e-12)
            ax.imshow(
                np.log10(np.clip(kernel / peak, 1e-4, None)),
                origin="lower",
                cmap="viridis",
                vmin=-4,
                vmax=0,
            )
            sxx, syy, sxy = exposure.psf.shape(x, y)
            sigma = (sxx * syy - sxy**2) ** 0.25
            ax.set_title(f"({x:.0f}, {y:.0f}) σ={sigma:.2f}px", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("PSF model, log10(image / peak)")
    return _save(fig, Path(path))


def _ref_sky_deg(matches) -> tuple[np.ndarray, np.ndarray]:
    """Reference (RA, Dec) [deg] from ``ref_ra/ref_dec`` [deg] or ``ref_coord_*`` (unit)."""
    for ra_name, dec_name in (("ref_ra", "ref_dec"), ("ref_coord_ra", "ref_coord_dec")):
        if ra_name in matches.colnames:
            out = []
            for name in (ra_name, dec_name):
                column = matches[name]
                # LSST convention: ref_ra/dec are degrees, *coord_* columns radians.
                unit = column.unit or (u.deg if ra_name == "ref_ra" else u.rad)
                out.append(u.Quantity(np.asarray(column, float), unit).to_value(u.deg))
            return out[0], out[1]
    raise KeyError("the astrometry matches have no reference coordinates")


def plot_astrometry_residuals(matches, wcs, path: str | os.PathLike[str]) -> Path:
    """Whiskers of (source − reference) sky offsets at the source pixel positions.

    Source positions go through ``wcs`` (the fitted WCS), so the figure shows the
    residuals of the final solution.
    """
    from promptcal.pipeline.astrometry.tan_sip import wcs_pixel_to_icrs

    x = np.asarray(matches["src_slot_Centroid_x"], float)
    y = np.asarray(matches["src_slot_Centroid_y"], float)
    ra_src, dec_src = (np.degrees(v) for v in wcs_pixel_to_icrs(wcs, x, y))
    ra_ref, dec_ref = _ref_sky_deg(matches)
    d_ra = ((ra_src - ra_ref + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec_ref)) * 3.6e6
    d_dec = (dec_src - dec_ref) * 3.6e6  # [mas]
    fig = Figure(figsize=(11, 5), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    size = np.hypot(d_ra, d_dec)
    finite = np.isfinite(size)
    scale = np.nanmax(size) if finite.any() and np.nanmax(size) > 0 else 1.0
    extent = max(np.ptp(x[finite]) if finite.any() else 1.0, 1.0)
    quiver = ax.quiver(
        x, y, d_ra, d_dec, angles="xy", scale_units="xy", scale=scale / (0.08 * extent)
    )
    ax.quiverkey(quiver, 0.75, 0.05, scale, f"{scale:.1f} mas", labelpos="E", coordinates="axes")
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"astrometric residuals (source − reference), {len(x)} matches")
    ax2.scatter(d_ra, d_dec, s=12)
    ax2.axhline(0, color="0.6", lw=0.8)
    ax2.axvline(0, color="0.6", lw=0.8)
    ax2.set_xlabel("ΔRA cos(Dec) [mas]")
    ax2.set_ylabel("ΔDec [mas]")
    ax2.set_title(f"median |Δ| = {np.nanmedian(size):.1f} mas")
    return _save(fig, Path(path))


def _ref_flux_column(matches, band: str | None) -> str:
    names = [c for c in matches.colnames if c.startswith("ref_") and c.endswith("_flux")]
    if band is not None and f"ref_{band}_flux" in names:
        return f"ref_{band}_flux"
    if not names:
        raise KeyError("the photometry matches have no ref_<band>_flux column")
    return names[0]


def plot_photometry_residuals(
    matches,
    calibration: float,
    path: str | os.PathLike[str],
    *,
    ref_band: str | None = None,
    flux_field: str = "slot_CalibFlux",
) -> Path:
    """Calibrated − reference AB magnitude against the reference magnitude.

    Parameters
    ----------
    calibration : float
        Fitted calibration [nJy/count] applied to ``src_<flux_field>_instFlux``.
    """
    ref_col = _ref_flux_column(matches, ref_band)
    ref_flux = np.asarray(matches[ref_col], float)
    inst = np.asarray(matches[f"src_{flux_field}_instFlux"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_mag = -2.5 * np.log10(ref_flux / AB_ZERO_NJY)
        src_mag = -2.5 * np.log10(inst * calibration / AB_ZERO_NJY)
    delta = (src_mag - ref_mag) * 1000.0  # [mmag]
    used = (
        np.asarray(matches["src_calib_photometry_used"], bool)
        if "src_calib_photometry_used" in matches.colnames
        else np.ones(len(delta), bool)
    )
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(ref_mag[used], delta[used], s=14, label="used")
    if (~used).any():
        ax.scatter(ref_mag[~used], delta[~used], s=14, marker="x", label="rejected")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel(f"{ref_col[4:]} reference magnitude [AB mag]")
    ax.set_ylabel(f"{flux_field} − reference [mmag]")
    ax.set_title(f"photometric residuals, calibration {calibration:.4g} nJy/count")
    ax.legend()
    return _save(fig, Path(path))


def write_plots(result, output_dir: str | os.PathLike[str], *, task=None) -> dict[str, Path]:
    """Draw the figures the available products allow; returns kind -> path."""
    out = Path(output_dir)
    paths: dict[str, Path] = {}
    exposure = getattr(result, "output_exposure", None)
    if exposure is not None and exposure.psf is not None:
        paths["psf_plot"] = plot_psf_grid(exposure, out / "psf_grid.png")
    astrom = getattr(result, "astrometry_matches", None)
    if astrom is not None and len(astrom) and exposure is not None and exposure.wcs is not None:
        paths["astrometry_plot"] = plot_astrometry_residuals(
            astrom, exposure.wcs, out / "astrometry_residuals.png"
        )
    photom = getattr(result, "photometry_matches", None)
    photo_calib = getattr(result, "applied_photo_calib", None)
    if photo_calib is None and exposure is not None and getattr(result, "failure", None) is None:
        photo_calib = exposure.photo_calib
    if photom is not None and len(photom) and photo_calib is not None:
        ref_band, flux_field = None, "slot_CalibFlux"
        if task is not None:
            config = task.config.photometry
            flux_field = config.flux_field
            ref_band = resolve_ref_band(exposure.band if exposure else None, config)
        paths["photometry_plot"] = plot_photometry_residuals(
            photom,
            float(photo_calib.mean),
            out / "photometry_residuals.png",
            ref_band=ref_band,
            flux_field=flux_field,
        )
    return paths
