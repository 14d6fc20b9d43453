"""The background model: binned sky values and their smooth full-resolution Chebyshev
surface (:class:`BackgroundModel`), and the list of models subtracted from an exposure
(:class:`BackgroundList`, the calexp's ``BKGD<i>`` HDUs). Estimation is in
:mod:`promptcal.pipeline.background`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from promptcal.core.errors import AlgorithmError, InvalidInputError
from promptcal.kernels.background import subtract_separable

# --------------------------------------------------------------------------- model


def _chebyshev_basis(coord: np.ndarray, length: int, order: int) -> np.ndarray:
    """Chebyshev polynomials T_0..T_order at pixel ``coord`` (pixel span mapped to [-1, 1])."""
    u = (2.0 * np.asarray(coord, np.float64) + 1.0) / length - 1.0
    basis = np.empty((u.size, order + 1))
    basis[:, 0] = 1.0
    if order >= 1:
        basis[:, 1] = u
    for k in range(2, order + 1):
        basis[:, k] = 2.0 * u * basis[:, k - 1] - basis[:, k - 2]
    return basis


def _term_mask(order_x: int, order_y: int) -> np.ndarray:
    """Allowed (j, i) terms: i <= order_x, j <= order_y, i + j <= max order (triangular)."""
    j, i = np.mgrid[: order_y + 1, : order_x + 1]
    return (i + j) <= max(order_x, order_y)


def _design_matrix(x_centers, y_centers, shape, order_x, order_y):
    """Least-squares design over the bin grid (rows: bins in C order) and its term indices."""
    ty = _chebyshev_basis(y_centers, shape[0], order_y)
    tx = _chebyshev_basis(x_centers, shape[1], order_x)
    jj, ii = np.nonzero(_term_mask(order_x, order_y))
    return (ty[:, None, jj] * tx[None, :, ii]).reshape(-1, jj.size), jj, ii


@dataclass(eq=False)
class BackgroundModel:
    """A binned background and its smooth full-resolution model.

    Attributes
    ----------
    bin_size : int
        Nominal bin size [px].
    values : numpy.ndarray
        float64 (ny_bins, nx_bins) binned background [image unit].
    x_centers, y_centers : numpy.ndarray
        float64 bin centres along x (nx_bins) and y (ny_bins) [px, local pixel index].
    shape : tuple of int
        (height, width) of the image [px].
    order_x, order_y : int
        Chebyshev orders actually used (already reduced to the number of bins).
    """

    bin_size: int
    values: np.ndarray
    x_centers: np.ndarray
    y_centers: np.ndarray
    shape: tuple[int, int]
    order_x: int
    order_y: int
    _coeffs: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.values = np.array(self.values, dtype=np.float64)
        self.x_centers = np.array(self.x_centers, dtype=np.float64)
        self.y_centers = np.array(self.y_centers, dtype=np.float64)
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        if self.values.shape != (self.y_centers.size, self.x_centers.size):
            raise InvalidInputError(
                f"binned values {self.values.shape} do not match {self.y_centers.size} y and "
                f"{self.x_centers.size} x bin centres"
            )
        if not (
            0 <= self.order_x < self.x_centers.size and 0 <= self.order_y < self.y_centers.size
        ):
            raise InvalidInputError(
                f"Chebyshev orders ({self.order_x}, {self.order_y}) need more bins than "
                f"{self.values.shape[::-1]} (x, y); expected order < number of bins"
            )

    def coefficients(self) -> np.ndarray:
        """Least-squares Chebyshev coefficients C[j, i] (y order j, x order i) [image unit]."""
        if self._coeffs is None:
            design, jj, ii = _design_matrix(
                self.x_centers, self.y_centers, self.shape, self.order_x, self.order_y
            )
            finite = np.isfinite(self.values.ravel())
            if not finite.any():
                raise AlgorithmError("background model has no finite binned value to fit")
            sol, *_ = np.linalg.lstsq(design[finite], self.values.ravel()[finite], rcond=None)
            coeffs = np.zeros((self.order_y + 1, self.order_x + 1))
            coeffs[jj, ii] = sol
            self._coeffs = coeffs
        return self._coeffs

    def evaluate(self, out: np.ndarray | None = None) -> np.ndarray:
        """The smooth background at every pixel, float32 of ``shape`` [image unit].

        Separable: ``Ty @ C @ Tx.T`` with per-axis Chebyshev bases, so the cost is one
        float32 matrix product of inner dimension ``order_y + 1``. ``out`` (float32,
        C-contiguous, ``shape``) receives the result when given, which avoids paying
        for a fresh 60 MB allocation on every call.
        """
        ty, rows = self._separable_factors()
        return np.matmul(ty, rows, out=out)

    def _separable_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``Ty`` (H, order_y+1) and ``C @ Tx.T`` (order_y+1, W)."""
        height, width = self.shape
        ty = _chebyshev_basis(np.arange(height), height, self.order_y).astype(np.float32)
        tx = _chebyshev_basis(np.arange(width), width, self.order_x)
        return ty, np.ascontiguousarray((self.coefficients() @ tx.T).astype(np.float32))

    def subtract_from(self, image: np.ndarray) -> None:
        """``image -= evaluate()`` in place, without a full-size temporary."""
        subtract_separable(image, *self._separable_factors())

    def scaled(self, factor: float) -> BackgroundModel:
        """A copy with the values multiplied by ``factor`` (e.g. [nJy / count])."""
        return BackgroundModel(
            self.bin_size,
            self.values * factor,
            self.x_centers,
            self.y_centers,
            self.shape,
            self.order_x,
            self.order_y,
        )


_EXTNAME = re.compile(r"^BKGD(\d+)$")


class BackgroundList(list):
    """An ordered list of :class:`BackgroundModel`; the total background is their sum."""

    def image(self) -> np.ndarray:
        """Sum of every element's evaluation, float32 [image unit]."""
        if not self:
            raise InvalidInputError("an empty BackgroundList has no image")
        total = self[0].evaluate()
        scratch = np.empty_like(total) if len(self) > 1 else None
        for model in self[1:]:
            total += model.evaluate(out=scratch)
        return total

    def scaled(self, factor: float) -> BackgroundList:
        """Every element multiplied by ``factor``."""
        return BackgroundList(model.scaled(factor) for model in self)

    def median_binned_sum(self) -> float:
        """Σ over elements of the median of the finite binned values (``skyBg``) [image unit]."""
        total = 0.0
        for model in self:
            finite = model.values[np.isfinite(model.values)]
            total += float(np.median(finite)) if finite.size else np.nan
        return total

    def to_hdus(self) -> list[fits.ImageHDU]:
        """One float64 ImageHDU of binned values per element, EXTNAME ``BKGD<i>``."""
        hdus = []
        for index, model in enumerate(self):
            header = fits.Header()
            header["BKBINSZ"] = (model.bin_size, "nominal bin size [px]")
            header["BKIMW"] = (model.shape[1], "image width [px]")
            header["BKIMH"] = (model.shape[0], "image height [px]")
            header["BKMODEL"] = ("CHEBYSHEV", "smooth model through the bin centres")
            header["BKORDX"] = (model.order_x, "Chebyshev order along x")
            header["BKORDY"] = (model.order_y, "Chebyshev order along y")
            for axis, centers in (("X", model.x_centers), ("Y", model.y_centers)):
                for k, c in enumerate(centers):
                    header[f"BK{axis}C{k}"] = (float(c), f"bin centre {axis.lower()} [px]")
            hdus.append(fits.ImageHDU(model.values, header=header, name=f"BKGD{index}"))
        return hdus

    @classmethod
    def from_hdus(cls, hdus) -> BackgroundList:
        """Rebuild from :meth:`to_hdus` output (other HDUs in ``hdus`` are ignored)."""
        found = []
        for hdu in hdus:
            match = _EXTNAME.match(str(hdu.header.get("EXTNAME", "")).strip().upper())
            if match is None:
                continue
            h = hdu.header
            try:
                nx, ny = int(h["NAXIS1"]), int(h["NAXIS2"])
                model = BackgroundModel(
                    int(h["BKBINSZ"]),
                    np.asarray(hdu.data, dtype=np.float64),
                    [h[f"BKXC{k}"] for k in range(nx)],
                    [h[f"BKYC{k}"] for k in range(ny)],
                    (int(h["BKIMH"]), int(h["BKIMW"])),
                    int(h["BKORDX"]),
                    int(h["BKORDY"]),
                )
            except KeyError as exc:
                raise InvalidInputError(f"background HDU {hdu.name} lacks card {exc}") from exc
            found.append((int(match.group(1)), model))
        return cls(model for _, model in sorted(found, key=lambda item: item[0]))
