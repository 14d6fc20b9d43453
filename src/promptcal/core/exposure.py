"""The in-memory exposure model (design §3).

Pixel arrays are C-contiguous: ``image`` and ``variance`` float32, ``mask`` int32
with named bit planes. ``xy0`` is the parent-frame position of pixel ``[0, 0]``;
every catalog position is in parent coordinates, so array index
``[y - y0, x - x0]`` holds the pixel centred on parent ``(x, y)``.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.coordinates import EarthLocation
from astropy.time import Time
from astropy.wcs import WCS

from promptcal.core.errors import InvalidInputError

#: afw's default plane order, so bit values match LSST files.
DEFAULT_MASK_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
}


@dataclass
class Mask:
    """Integer mask with named bit planes.

    Attributes
    ----------
    array : numpy.ndarray
        int32 bit mask, same shape as the image.
    planes : dict[str, int]
        Plane name -> bit index.
    """

    array: np.ndarray
    planes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MASK_PLANES))

    def __post_init__(self) -> None:
        self.array = np.ascontiguousarray(self.array, dtype=np.int32)
        for name in DEFAULT_MASK_PLANES:
            self.add_plane(name)

    def add_plane(self, name: str) -> int:
        """Return the bit index of ``name``, adding the plane if it is new."""
        if name not in self.planes:
            used = set(self.planes.values())
            free = next(i for i in range(31) if i not in used)
            self.planes[name] = free
        return self.planes[name]

    def bit(self, *names: str) -> int:
        """Bit value (OR of ``1 << index``) of the named planes; unknown names add planes."""
        value = 0
        for name in names:
            value |= 1 << self.add_plane(name)
        return value

    def is_set(self, *names: str) -> np.ndarray:
        """Boolean array: any of the named planes set."""
        from promptcal.kernels.maskops import bits_set

        return bits_set(self.array, np.int32(self.bit(*names)))

    def any_set(self, *names: str) -> bool:
        """Whether any pixel has any of the named planes set."""
        from promptcal.kernels.maskops import any_bits_set

        return bool(any_bits_set(self.array, np.int32(self.bit(*names))))

    def copy(self) -> Mask:
        return Mask(self.array.copy(), dict(self.planes))


@dataclass
class PhotoCalib:
    """Photometric calibration: ``calibrated = instrumental × mean``.

    Attributes
    ----------
    mean : float
        Calibration [nJy / count]; 1.0 for pixels already in nJy.
    error : float
        1σ error of ``mean`` [nJy / count].
    """

    mean: float
    error: float = 0.0

    def inst_flux_to_nanojansky(self, inst_flux: np.ndarray) -> np.ndarray:
        return np.asarray(inst_flux) * self.mean

    @property
    def zero_point(self) -> float:
        """AB magnitude of one count [mag]."""
        return float(2.5 * np.log10(3631e9 / self.mean))


@dataclass
class VisitInfo:
    """What the observatory knew about the visit.

    Attributes
    ----------
    exposure_id : int
        Exposure identifier (snap 0's for combined snaps).
    exposure_time : float
        Open-shutter time [s].
    date : astropy.time.Time or None
        Mid-exposure time (TAI/UTC as given).
    observatory : astropy.coordinates.EarthLocation or None
        Telescope location.
    boresight_ra_dec : tuple of float or None
        Boresight (RA, Dec) [deg].
    rotation_angle : float or None
        Sky rotation angle of the camera [deg].
    """

    exposure_id: int = 0
    exposure_time: float = 0.0
    date: Time | None = None
    observatory: EarthLocation | None = None
    boresight_ra_dec: tuple[float, float] | None = None
    rotation_angle: float | None = None


@dataclass
class Detector:
    """The detector that took the exposure.

    Attributes
    ----------
    id : int
        Detector number.
    name : str
        Detector name.
    gain : float
        Mean gain [e⁻ / count].
    read_noise : float
        Mean read noise [e⁻].
    saturation : float
        Saturation level [count]; ``inf`` when unknown.
    """

    id: int = 0
    name: str = ""
    gain: float = 1.0
    read_noise: float = 0.0
    saturation: float = float("inf")


@dataclass
class Exposure:
    """Image, variance and mask with their metadata.

    Attributes
    ----------
    image : numpy.ndarray
        float32 pixels [count, or nJy once calibrated].
    variance : numpy.ndarray
        float32 per-pixel variance [image unit²].
    mask : Mask
        Bit mask with named planes.
    xy0 : tuple of int
        Parent-frame (x, y) of pixel ``[0, 0]``.
    wcs : astropy.wcs.WCS or None
        Pixel → sky mapping in *parent* pixel coordinates (0-based).
    psf : object or None
        PSF model (see :mod:`promptcal.core.psf_model`).
    photo_calib : PhotoCalib or None
        Calibration to nJy.
    band : str or None
        Physical filter band, e.g. ``"r"``.
    """

    image: np.ndarray
    variance: np.ndarray
    mask: Mask
    xy0: tuple[int, int] = (0, 0)
    wcs: WCS | None = None
    psf: Any = None
    photo_calib: PhotoCalib | None = None
    visit_info: VisitInfo = field(default_factory=VisitInfo)
    detector: Detector | None = None
    band: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    ap_corr_map: Any = None
    summary: Any = None

    def __post_init__(self) -> None:
        self.image = np.ascontiguousarray(self.image, dtype=np.float32)
        self.variance = np.ascontiguousarray(self.variance, dtype=np.float32)
        if isinstance(self.mask, np.ndarray):
            self.mask = Mask(self.mask)
        if not (self.image.shape == self.variance.shape == self.mask.array.shape):
            raise InvalidInputError(
                f"image {self.image.shape}, variance {self.variance.shape} and mask "
                f"{self.mask.array.shape} planes must have the same shape"
            )
        if self.image.ndim != 2:
            raise InvalidInputError(f"expected a 2-D image, got shape {self.image.shape}")
        self.xy0 = (int(self.xy0[0]), int(self.xy0[1]))

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive parent bounding box ``(x_min, y_min, x_max, y_max)`` [px]."""
        x0, y0 = self.xy0
        return x0, y0, x0 + self.width - 1, y0 + self.height - 1

    @property
    def center(self) -> tuple[float, float]:
        """Parent (x, y) of the bounding-box centre [px]."""
        x_min, y_min, x_max, y_max = self.bbox
        return 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)

    def copy(self) -> Exposure:
        """A deep copy (pixels included)."""
        return _copy.deepcopy(self)

    @classmethod
    def from_image(cls, image: np.ndarray, variance: np.ndarray | None = None, **kwargs: Any):
        """Build an exposure from an image (variance from the image when omitted)."""
        image = np.asarray(image, dtype=np.float32)
        if variance is None:
            variance = np.full_like(image, np.nanvar(image))
        return cls(image, variance, Mask(np.zeros(image.shape, np.int32)), **kwargs)
