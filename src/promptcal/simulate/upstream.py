"""LSST's ``test_calibrateImage.py`` fixture (meas_base ``TestDataset``), rebuilt.

What ``pipe_tasks/tests/test_calibrateImage.py`` builds (spec §D), reproduced here:

- bbox (5, 4)–(205, 184) inclusive: 201 × 181 px, xy0 = (5, 4).
- TAN WCS, crval (245°, −45°), reference pixel at the bbox centre, parent (105, 94)
  (0-based; FITS CRPIX = 106, 95), 0.2″/px, north up, east left.
- Gaussian PSF σ = 2 px; calibration 12.3 nJy/count; visit 1234, 30 s, MJD 60000;
  detector 12, gain 1, read noise 0.
- Point sources with ``inst_flux = k · 10 · sqrt(4π σ²)`` for k = 6, 12, 45, 150, 400,
  1000, and an extended source at (100, 100): a Gaussian with moments
  (Ixx, Iyy, Ixy) = (8, 9, 3) px² convolved with the PSF (moments add), k = 500.
- Profiles are evaluated at pixel centres and normalised analytically
  (``F / (2π sqrt(det C))``), as ``TestDataset.drawGaussian`` does.
- Noise: ``numpy.random.RandomState(seed).randn(height, width) * 10`` — the generator
  ``TestDataset.realize`` uses, so the realisation is upstream's pixel for pixel (up
  to float32 rounding of the source image); variance plane 100. Then +500 is added to
  the image only.
- ``DETECTED``: ``TestDataset`` thresholds each noiseless single-source image at
  10 counts (1σ of the noise) and grows the footprint isotropically by
  ``int(σ + 1) = 3`` px; the mask is the union.

The exposure carries no PSF or PhotoCalib (a post-ISR exposure has neither); the
truths are in ``metadata["TRUTH_CALIBRATION"]`` [nJy/count] and
``metadata["PSF_FWHM"]`` [px].
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.time import Time
from scipy import ndimage

from promptcal.core.exposure import Detector, Exposure, Mask, VisitInfo
from promptcal.simulate.core import RUBIN_LOCATION
from promptcal.simulate.truth import flux_to_ab_mag
from promptcal.simulate.wcs import cd_matrix, make_tan_wcs

BBOX_MIN = (5, 4)
BBOX_MAX = (205, 184)
SKY_CENTER = (245.0, -45.0)
PSF_SIGMA = 2.0
CALIBRATION = 12.3
NOISE = 10.0
BACKGROUND = 500.0
PSF_SCALE = float(np.sqrt(4.0 * np.pi * PSF_SIGMA**2))
K_VALUES = (6, 12, 45, 150, 400, 1000)
CENTROIDS = ((162, 22), (40, 70), (100, 160), (50, 120), (92, 35), (175, 154))
EXTENDED_CENTROID = (100, 100)
EXTENDED_K = 500
EXTENDED_MOMENTS = (8.0, 9.0, 3.0)
DETECTION_THRESHOLD = 10.0
DETECTION_GROW = int(PSF_SIGMA + 1.0)


@dataclass
class UpstreamDataset:
    """The fixture and its truth.

    Attributes
    ----------
    exposure : promptcal.core.exposure.Exposure
        Sources + noise + 500 [count], variance 100, DETECTED footprints.
    truth : astropy.table.Table
        ``id, x, y`` [px], ``ra, dec`` [deg], ``truth_instFlux`` [count],
        ``truth_flux``, ``truth_fluxErr`` [nJy], ``truth_mag`` [AB mag],
        ``truth_xx, truth_yy, truth_xy`` (PSF-convolved moments) [px²], ``is_extended``;
        ``meta["band"] == "truth"``.
    truth_image : numpy.ndarray
        float32 noiseless sources only (no background, no noise) [count].
    original_image : numpy.ndarray
        Copy of ``exposure.image`` as built (upstream's ``truth_exposure.image``, the
        reference of ``test_photometry``'s pixel comparison) [count].
    """

    exposure: Exposure
    truth: Table
    truth_image: np.ndarray
    original_image: np.ndarray
    calibration: float = CALIBRATION
    background: float = BACKGROUND
    noise: float = NOISE

    def __iter__(self):
        """Unpack as ``exposure, truth, truth_image``."""
        return iter((self.exposure, self.truth, self.truth_image))


def _draw_gaussian(shape, xy0, center, cov, flux) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dx = xx + xy0[0] - center[0]
    dy = yy + xy0[1] - center[1]
    inv = np.linalg.inv(cov)
    q = inv[0, 0] * dx**2 + 2.0 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2
    return np.exp(-0.5 * q) * flux / (2.0 * np.pi * np.sqrt(np.linalg.det(cov)))


# Long: transcribes meas_base's TestDataset fixture line by line, so it can be compared
# with the upstream source.
def make_upstream_dataset(seed: int = 1) -> UpstreamDataset:
    """Build the ``test_calibrateImage.py`` fixture (see the module docstring)."""
    width = BBOX_MAX[0] - BBOX_MIN[0] + 1
    height = BBOX_MAX[1] - BBOX_MIN[1] + 1
    shape = (height, width)
    xy0 = BBOX_MIN
    center = (0.5 * (BBOX_MIN[0] + BBOX_MAX[0]), 0.5 * (BBOX_MIN[1] + BBOX_MAX[1]))
    wcs = make_tan_wcs(center, *SKY_CENTER, cd_matrix(0.2, 0.0))
    psf_cov = np.diag([PSF_SIGMA**2, PSF_SIGMA**2])

    ixx, iyy, ixy = EXTENDED_MOMENTS
    ext_cov = np.array([[ixx, ixy], [ixy, iyy]]) + psf_cov
    sources = [
        (c, k * NOISE * PSF_SCALE, psf_cov, False) for c, k in zip(CENTROIDS, K_VALUES, strict=True)
    ]
    sources.append((EXTENDED_CENTROID, EXTENDED_K * NOISE * PSF_SCALE, ext_cov, True))

    truth_image = np.zeros(shape, dtype=np.float32)
    detected = np.zeros(shape, dtype=bool)
    disk = (
        np.hypot(
            *np.mgrid[-DETECTION_GROW : DETECTION_GROW + 1, -DETECTION_GROW : DETECTION_GROW + 1]
        )
        <= DETECTION_GROW
    )
    for centroid, flux, cov, _ in sources:
        single = _draw_gaussian(shape, xy0, centroid, cov, flux).astype(np.float32)
        truth_image += single
        detected |= ndimage.binary_dilation(single > DETECTION_THRESHOLD, structure=disk)

    noise = np.random.RandomState(seed).randn(height, width) * NOISE
    image = (truth_image + noise).astype(np.float32)
    image += np.float32(BACKGROUND)
    variance = np.full(shape, NOISE**2, dtype=np.float32)
    mask = Mask(np.zeros(shape, dtype=np.int32))
    mask.array[detected] |= mask.bit("DETECTED")

    visit = VisitInfo(
        exposure_id=1234,
        exposure_time=30.0,
        date=Time(60000.0, format="mjd", scale="tai"),
        observatory=RUBIN_LOCATION,
        boresight_ra_dec=SKY_CENTER,
        rotation_angle=0.0,
    )
    exposure = Exposure(
        image,
        variance,
        mask,
        xy0=xy0,
        wcs=wcs,
        visit_info=visit,
        detector=Detector(id=12, name="upstream", gain=1.0, read_noise=0.0),
        band="truth",
        metadata={
            "TRUTH_CALIBRATION": CALIBRATION,
            "PSF_FWHM": 2.0 * np.sqrt(2.0 * np.log(2.0)) * PSF_SIGMA,
            "LSST ISR FLAT APPLIED": True,
        },
    )

    x = np.array([c[0] for c, *_ in sources], dtype=np.float64)
    y = np.array([c[1] for c, *_ in sources], dtype=np.float64)
    inst = np.array([f for _, f, *_ in sources])
    ra, dec = wcs.all_pix2world(x, y, 0)
    truth = Table()
    truth["id"] = np.arange(1, len(sources) + 1, dtype=np.int64)
    truth["x"] = x * u.pix
    truth["y"] = y * u.pix
    truth["ra"] = ra * u.deg
    truth["dec"] = dec * u.deg
    truth["truth_instFlux"] = inst * u.count
    truth["truth_flux"] = inst * CALIBRATION * u.nJy
    truth["truth_fluxErr"] = np.zeros(len(sources)) * u.nJy
    truth["truth_mag"] = flux_to_ab_mag(inst * CALIBRATION) * u.mag
    truth["truth_xx"] = np.array([cov[0, 0] for *_, cov, _ in sources]) * u.pix**2
    truth["truth_yy"] = np.array([cov[1, 1] for *_, cov, _ in sources]) * u.pix**2
    truth["truth_xy"] = np.array([cov[0, 1] for *_, cov, _ in sources]) * u.pix**2
    truth["is_extended"] = np.array([ext for *_, ext in sources], dtype=bool)
    truth.meta["band"] = "truth"
    return UpstreamDataset(exposure, truth, truth_image, image.copy())


def make_upstream_snaps(seed: int = 1) -> list[Exposure]:
    """``test_run_2_snaps``: the same exposure twice, each with image/2 and variance/2."""
    exposure = make_upstream_dataset(seed).exposure
    exposure.image /= 2
    exposure.variance /= 2
    return [exposure, exposure.copy()]


def make_bad_centroid_variant(seed: int = 1) -> UpstreamDataset:
    """``test_compute_psf_bad_centroids``: holes in the source centres plus a gradient.

    For each point source, the 3×3 pixels around the centroid lose 1/1.1 of their excess
    over the 500 background; the extended source's central pixel loses all of it. Then
    each point source gets ``((dx + 5) · 10 + (dy + 5) · 10) / flux`` [count] for
    offsets ``-5 <= dx, dy < 5`` within radius 5, added at offsets shifted by +1
    (upstream adds the 10×10 array into ``Box2I.makeCenteredBox(centre, 10×10)``,
    whose rounding starts the box at ``centre − 4``).
    """
    data = make_upstream_dataset(seed)
    img = data.exposure.image
    x0, y0 = data.exposure.xy0
    for px, py in CENTROIDS:
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                iy, ix = py + j - y0, px + i - x0
                img[iy, ix] -= (img[iy, ix] - BACKGROUND) / 1.1
    ex, ey = EXTENDED_CENTROID
    img[ey - y0, ex - x0] -= img[ey - y0, ex - x0] - BACKGROUND

    size = 5
    off = np.arange(-size, size)
    dyy, dxx = np.meshgrid(off, off, indexing="ij")
    distance = np.hypot(dxx, dyy)
    for (px, py), k in zip(CENTROIDS, K_VALUES, strict=True):
        flux = k * NOISE * PSF_SCALE
        gradient = (dxx + size) * 10.0 + (dyy + size) * 10.0
        gradient[distance > size] = 0.0
        ys = slice(py - size + 1 - y0, py + size + 1 - y0)
        xs = slice(px - size + 1 - x0, px + size + 1 - x0)
        img[ys, xs] += (gradient / flux).astype(np.float32)
    return data
