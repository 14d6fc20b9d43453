"""PSF models: an analytic Gaussian and a pixel-basis model with polynomial
spatial variation (psfex-like). Positions are parent pixel coordinates."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from promptcal.kernels.measure import adaptive_moments
from promptcal.kernels.psf import pixel_psf_stamps, shift_stamp


def polynomial_terms(order: int) -> list[tuple[int, int]]:
    """Exponents ``(i, j)`` of x^i y^j with i + j ≤ order, in a fixed order."""
    return [(total - j, j) for total in range(order + 1) for j in range(total + 1)]


def kernel_shape(image: np.ndarray, sigma_guess: float) -> tuple[float, float, float]:
    """Adaptive second moments (Ixx, Iyy, Ixy) [px²] of a centred kernel image."""
    size = image.shape[0]
    padded = np.zeros((size + 130, size + 130), np.float32)
    padded[65 : 65 + size, 65 : 65 + size] = image
    labels = np.zeros(padded.shape, np.int32)
    centre = np.array([65 + size // 2], np.float64)
    moments = adaptive_moments(
        padded, padded, labels, np.zeros(1, np.int32), centre, centre, sigma_guess, 100, 1e-7
    )
    xx, yy, xy = float(moments.ixx[0]), float(moments.iyy[0]), float(moments.ixy[0])
    if np.isfinite(xx) and np.isfinite(yy) and np.isfinite(xy):
        return xx, yy, xy
    # A kernel narrower than a pixel defeats adaptive moments (the weight collapses onto
    # one pixel). The model is noise-free, so one Gaussian-weighted measurement with a
    # fixed weight W, deconvolved as C = (M⁻¹ − W⁻¹)⁻¹ (exact for a Gaussian), is enough;
    # unweighted moments would be dominated by the stamp's faint wings.
    kernel = np.asarray(image, np.float64)
    offsets = np.arange(size) - size // 2
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    w_sigma2 = max(sigma_guess, 1.0) ** 2
    weighted = kernel * np.exp(-0.5 * (dx * dx + dy * dy) / w_sigma2)
    total = weighted.sum()
    m = (
        np.array(
            [
                [(weighted * dx * dx).sum(), (weighted * dx * dy).sum()],
                [(weighted * dx * dy).sum(), (weighted * dy * dy).sum()],
            ]
        )
        / total
    )
    c = np.linalg.inv(np.linalg.inv(m) - np.eye(2) / w_sigma2)
    return float(c[0, 0]), float(c[1, 1]), float(c[0, 1])


class PsfModel:
    """Common interface of PSF models."""

    size: int

    def kernel_image(self, x: float, y: float) -> np.ndarray:
        """Centred, unit-sum kernel image (size × size) at parent position (x, y)."""
        raise NotImplementedError

    def stamps(self, x: np.ndarray, y: np.ndarray, xy0=(0, 0)):
        """Unit-sum PSF images centred on each parent (x, y), for fitting on the array.

        Returns
        -------
        stamps : numpy.ndarray
            float64 (n, size, size).
        origin_x, origin_y : numpy.ndarray
            int64 array coordinates of each stamp's pixel [0, 0].
        """
        x = np.atleast_1d(np.asarray(x, np.float64))
        y = np.atleast_1d(np.asarray(y, np.float64))
        half = self.size // 2
        out = np.empty((x.size, self.size, self.size))
        ax = x - xy0[0]
        ay = y - xy0[1]
        cx = np.floor(ax + 0.5).astype(np.int64)
        cy = np.floor(ay + 0.5).astype(np.int64)
        out = self._shifted_stamps(x, y, ax - cx, ay - cy)
        return out, cx - half, cy - half

    def _shifted_stamps(self, x, y, dx, dy) -> np.ndarray:
        """Unit-sum kernel images at (x, y) moved by sub-pixel (dx, dy); (n, S, S)."""
        out = np.empty((x.size, self.size, self.size))
        for i in range(x.size):
            stamp = shift_stamp(self.kernel_image(x[i], y[i]).astype(np.float64), dx[i], dy[i], 3)
            out[i] = stamp / stamp.sum()
        return out

    def shape(self, x: float, y: float) -> tuple[float, float, float]:
        """Adaptive moments (Ixx, Iyy, Ixy) [px²] of the kernel at (x, y) (memoised)."""
        cache = self.__dict__.setdefault("_shape_cache", {})
        key = (float(x), float(y))
        if key not in cache:
            cache[key] = kernel_shape(self.kernel_image(x, y), self.sigma_guess)
        return cache[key]

    def determinant_radius(self, x: float, y: float) -> float:
        """(Ixx Iyy − Ixy²)^¼ [px] at (x, y)."""
        xx, yy, xy = self.shape(x, y)
        return float((xx * yy - xy * xy) ** 0.25)

    @property
    def sigma_guess(self) -> float:
        raise NotImplementedError


class GaussianPsf(PsfModel):
    """A circular Gaussian PSF.

    Parameters
    ----------
    sigma : float
        Gaussian σ [px].
    size : int
        Odd stamp width [px].
    """

    def __init__(self, sigma: float, size: int | None = None) -> None:
        self.sigma = float(sigma)
        self.size = int(size) if size is not None else stamp_size_for(self.sigma)

    @property
    def sigma_guess(self) -> float:
        return self.sigma

    def _profile(self, dx: float, dy: float) -> np.ndarray:
        half = self.size // 2
        offsets = np.arange(-half, half + 1, dtype=np.float64)
        gx = np.exp(-0.5 * ((offsets - dx) / self.sigma) ** 2)
        gy = np.exp(-0.5 * ((offsets - dy) / self.sigma) ** 2)
        stamp = np.outer(gy, gx)
        return stamp / stamp.sum()

    def kernel_image(self, x: float, y: float) -> np.ndarray:
        return self._profile(0.0, 0.0)

    def _shifted_stamps(self, x, y, dx, dy) -> np.ndarray:
        half = self.size // 2
        offsets = np.arange(-half, half + 1, dtype=np.float64)
        gx = np.exp(-0.5 * ((offsets[None, :] - dx[:, None]) / self.sigma) ** 2)
        gy = np.exp(-0.5 * ((offsets[None, :] - dy[:, None]) / self.sigma) ** 2)
        gx /= gx.sum(axis=1, keepdims=True)
        gy /= gy.sum(axis=1, keepdims=True)
        return gy[:, :, None] * gx[:, None, :]

    def to_hdu(self) -> fits.BinTableHDU:
        hdu = fits.BinTableHDU.from_columns([fits.Column("sigma", "D", array=[self.sigma])])
        hdu.header["EXTNAME"] = "PSF"
        hdu.header["PSFTYPE"] = "GAUSSIAN"
        hdu.header["PSFSIZE"] = self.size
        return hdu


class PixelPsf(PsfModel):
    """Pixel-basis PSF whose every pixel is a polynomial in position.

    Parameters
    ----------
    coefficients : numpy.ndarray
        float64 (n_terms, size, size) images multiplying each polynomial term.
    order : int
        Polynomial order of the spatial variation.
    center, scale : tuple of float
        Parent (x, y) centre and half-extent [px] used to normalise positions to ~[-1, 1].
    """

    def __init__(self, coefficients, order, center, scale, sigma_guess) -> None:
        self.coefficients = np.ascontiguousarray(coefficients, np.float64)
        self.order = int(order)
        self.center = (float(center[0]), float(center[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.size = int(self.coefficients.shape[1])
        self._sigma_guess = float(sigma_guess)

    @property
    def sigma_guess(self) -> float:
        return self._sigma_guess

    def term_values(self, x, y) -> np.ndarray:
        """Polynomial terms at parent positions; shape (n_terms, n)."""
        u = (np.atleast_1d(np.asarray(x, np.float64)) - self.center[0]) / self.scale[0]
        v = (np.atleast_1d(np.asarray(y, np.float64)) - self.center[1]) / self.scale[1]
        return np.array([u**i * v**j for i, j in polynomial_terms(self.order)])

    def kernel_image(self, x: float, y: float) -> np.ndarray:
        terms = self.term_values(x, y)[:, 0]
        image = np.tensordot(terms, self.coefficients, axes=1)
        return image / image.sum()

    def _shifted_stamps(self, x, y, dx, dy) -> np.ndarray:
        terms = np.ascontiguousarray(self.term_values(x, y))
        return pixel_psf_stamps(self.coefficients, terms, dx, dy, 3)

    def to_hdu(self) -> fits.ImageHDU:
        hdu = fits.ImageHDU(self.coefficients.astype(np.float64), name="PSF")
        hdu.header["PSFTYPE"] = "PIXEL"
        hdu.header["PSFORDER"] = self.order
        hdu.header["PSFCX"], hdu.header["PSFCY"] = self.center
        hdu.header["PSFSX"], hdu.header["PSFSY"] = self.scale
        hdu.header["PSFSIG0"] = self._sigma_guess
        return hdu


def stamp_size_for(sigma: float, minimum: int = 15, maximum: int = 41) -> int:
    """Odd stamp width covering ±5σ, clipped to [minimum, maximum] [px]."""
    size = 2 * int(np.ceil(5.0 * sigma)) + 1
    return int(np.clip(size, minimum, maximum)) | 1


def psf_from_hdu(hdu) -> PsfModel:
    """Rebuild a PSF model written by ``to_hdu``."""
    kind = hdu.header["PSFTYPE"]
    if kind == "GAUSSIAN":
        return GaussianPsf(float(hdu.data["sigma"][0]), int(hdu.header["PSFSIZE"]))
    if kind == "PIXEL":
        h = hdu.header
        return PixelPsf(
            np.asarray(hdu.data),
            h["PSFORDER"],
            (h["PSFCX"], h["PSFCY"]),
            (h["PSFSX"], h["PSFSY"]),
            h["PSFSIG0"],
        )
    raise ValueError(f"unknown PSF type {kind!r}")
