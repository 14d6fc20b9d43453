"""The aperture-correction map: per flux field, a 2-D Chebyshev polynomial of the
correction over the detector, and its FITS table form (the calexp's ``APCORR`` HDU)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from numpy.polynomial import chebyshev


@dataclass
class ChebyshevField:
    """A triangular 2-D Chebyshev polynomial over a parent bounding box.

    Attributes
    ----------
    coefficients : numpy.ndarray
        float64 (order+1, order+1) with zeros where i + j > order.
    bbox : tuple of float
        (x_min, y_min, x_max, y_max) [px] mapped to [-1, 1].
    """

    coefficients: np.ndarray
    bbox: tuple[float, float, float, float]

    def _uv(self, x, y):
        x_min, y_min, x_max, y_max = self.bbox
        u = (2.0 * (np.asarray(x, float) - x_min) / max(x_max - x_min, 1.0)) - 1.0
        v = (2.0 * (np.asarray(y, float) - y_min) / max(y_max - y_min, 1.0)) - 1.0
        return u, v

    def evaluate(self, x, y) -> np.ndarray:
        """Value at parent positions."""
        u, v = self._uv(x, y)
        return chebyshev.chebval2d(u, v, self.coefficients)

    @classmethod
    def fit(cls, x, y, z, order: int, bbox) -> ChebyshevField:
        """Least-squares fit with terms T_i(u) T_j(v), i + j ≤ order."""
        field = cls(np.zeros((order + 1, order + 1)), bbox)
        u, v = field._uv(x, y)
        vander = chebyshev.chebvander2d(u, v, [order, order])
        ii, jj = np.meshgrid(np.arange(order + 1), np.arange(order + 1), indexing="ij")
        keep = (ii + jj).ravel() <= order
        solution, *_ = np.linalg.lstsq(vander[:, keep], z, rcond=None)
        coeffs = np.zeros((order + 1) ** 2)
        coeffs[keep] = solution
        field.coefficients = coeffs.reshape(order + 1, order + 1)
        return field


def n_params(order: int) -> int:
    return (order + 1) * (order + 2) // 2


class ApCorrMap(dict):
    """Field name (e.g. ``base_PsfFlux_instFlux``) -> :class:`ChebyshevField`."""

    def to_hdu(self) -> fits.BinTableHDU:
        names = sorted(self)
        size = max((f.coefficients.shape[0] for f in self.values()), default=1)
        coeffs = np.zeros((len(names), size, size))
        for k, name in enumerate(names):
            c = self[name].coefficients
            coeffs[k, : c.shape[0], : c.shape[1]] = c
        bbox = np.array([self[n].bbox for n in names], float).reshape(-1, 4)
        cols = [
            fits.Column("name", f"{max([len(n) for n in names] + [1])}A", array=names),
            fits.Column("bbox", "4D", array=bbox),
            fits.Column("coefficients", f"{size * size}D", array=coeffs.reshape(len(names), -1)),
        ]
        hdu = fits.BinTableHDU.from_columns(cols, name="APCORR")
        hdu.header["APCSIZE"] = size
        return hdu

    @classmethod
    def from_hdu(cls, hdu) -> ApCorrMap:
        size = int(hdu.header["APCSIZE"])
        out = cls()
        for row in hdu.data:
            coeffs = np.asarray(row["coefficients"], float).reshape(size, size)
            out[str(row["name"]).strip()] = ChebyshevField(coeffs, tuple(row["bbox"]))
        return out
