"""All-source drivers of the per-source measurement kernels, reading a full noise plane.

The pipeline calls the per-source kernels (``centroid_one``, ``aperture_fluxes_one``,
``gaussian_flux_one``) through ``measure_core``, which measures at its own centroids.
These plain Python loops call the same compiled kernels at positions a test chooses,
with a full (H, W) noise plane read through the one-row table of ``plane_table``, so
each kernel can be compared with its oracle on its own.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels import centroid as ck
from promptcal.kernels import fluxes as fk
from promptcal.kernels import noise as nk


def _table(noise):
    return nk.flat(noise), nk.plane_table(noise)


def centroids(image, variance, noise, labels, own, x_start, y_start, sigma, max_iter):
    """``centroid_one`` of every source: x, y, x_err, y_err [px] and int flags."""
    values, table = _table(noise)
    buf = ck.centroid_buffer(sigma)
    rows = []
    for i in range(len(x_start)):
        row = ck.centroid_one(
            image, variance, values, table, labels, own[i], float(x_start[i]),
            float(y_start[i]), sigma, max_iter, buf,
        )  # fmt: skip
        rows.append(row)
    x, y, xe, ye, flags = (np.array(column) for column in zip(*rows, strict=True))
    return x, y, xe, ye, flags.astype(np.int32)


def central_hole(image, variance, noise, labels, own, ix, iy, nsigma):
    """The hollow-centre test at (ix, iy) as source ``own`` sees the image."""
    values, table = _table(noise)
    return ck.central_hole(image, variance, values, table, labels, own, ix, iy, nsigma)


def aperture_fluxes(image, variance, noise, labels, own, xc, yc, radii):
    """Naive aperture sums (n, n_radii): flux, error, truncated."""
    values, table = _table(noise)
    limits, rank = fk.distinct_radii(radii)
    buf, rows = fk.aperture_buffers(radii, limits.size)
    n = len(xc)
    flux, err = np.zeros((n, radii.size)), np.zeros((n, radii.size))
    truncated = np.zeros((n, radii.size), bool)
    for i in range(n):
        fk.aperture_fluxes_one(
            image, variance, values, table, labels, own[i], float(xc[i]), float(yc[i]),
            radii.max(), limits, rank, buf, rows, flux[i], err[i], truncated[i],
        )  # fmt: skip
    return flux, err, truncated


def gaussian_fluxes(image, variance, noise, labels, own, xc, yc, wxx, wyy, wxy):
    """Gaussian flux and error of every source at fixed centre and weight."""
    values, table = _table(noise)
    out = np.zeros((len(xc), 2))
    for i in range(len(xc)):
        out[i] = fk.gaussian_flux_one(
            image, variance, values, table, labels, own[i], float(xc[i]), float(yc[i]),
            float(wxx[i]), float(wyy[i]), float(wxy[i]),
        )  # fmt: skip
    return out[:, 0], out[:, 1]


def psf_fluxes(image, variance, noise, labels, own, stamps, stamp_x0, stamp_y0):
    """``boxed_psf_fluxes`` reading a full noise plane."""
    values, table = _table(noise)
    return fk.boxed_psf_fluxes(
        image, variance, values, table, labels, own, stamps, stamp_x0, stamp_y0
    )
