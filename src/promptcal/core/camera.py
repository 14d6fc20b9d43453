"""Camera geometry and the predicted per-detector WCS used to preload reference shards.

File format (JSON, ``format_version`` 1)
----------------------------------------
::

    {
      "format_version": 1,
      "name": "toy3x3",
      "pixel_scale_arcsec": 0.2,        // on-sky pixel scale ["/px] at pixel_size_um
      "pixel_size_um": 10.0,            // physical pixel size [um]; optional, default 10
      "detectors": [
        {"id": 0, "name": "S00", "width": 2048, "height": 2048,      // [px]
         "center_x_mm": -20.98, "center_y_mm": -20.98,              // [mm] focal plane
         "rotation_deg": 0.0,                                       // [deg]
         "pixel_size_um": null,                                     // optional override
         "saturation": null}                                        // [count], optional
      ]
    }

(Comments are not allowed in the real file.) The plate scale ["/mm] is
``pixel_scale_arcsec * 1000 / pixel_size_um``. Focal-plane coordinates are in mm,
centred on the optical axis (the boresight). A detector's centre is the centre of its
pixel grid, pixel ``((width-1)/2, (height-1)/2)`` in 0-based pixel coordinates, and
``rotation_deg`` is the angle from the focal-plane +x axis to the detector's +x axis,
counter-clockwise. Optical distortion is ignored: it is far below the 30" preload
padding over a detector.

Sky orientation
---------------
``rotation_deg`` (the sky rotation angle, Rubin's rotSkyPos convention) is the position
angle of the focal-plane +y axis, measured from north through east. At 0 deg, +y points
north and +x points west (east to the left, the usual parity of a sky image, so the CD
matrix has a negative determinant).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal, Self

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from promptcal.core.errors import InvalidInputError


class DetectorGeometry(BaseModel):
    """Where one detector sits in the focal plane."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int = Field(ge=0, description="Detector number.")
    name: str = Field(min_length=1, description="Detector name, e.g. 'R22_S11'.")
    width: int = Field(gt=0, description="Columns [px].")
    height: int = Field(gt=0, description="Rows [px].")
    center_x_mm: float = Field(description="Focal-plane x of the detector centre [mm].")
    center_y_mm: float = Field(description="Focal-plane y of the detector centre [mm].")
    rotation_deg: float = Field(0.0, description="Focal-plane +x to detector +x, CCW [deg].")
    pixel_size_um: float | None = Field(None, gt=0, description="Override of the pixel size [um].")
    saturation: float | None = Field(
        None, gt=0, description="Saturation level [count]; overrides the files' SATURATE."
    )


class Camera(BaseModel):
    """A camera: on-sky pixel scale and detector layout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1] = Field(1, description="Camera file format version.")
    name: str = Field(min_length=1, description="Camera name.")
    pixel_scale_arcsec: float = Field(gt=0, description='On-sky pixel scale ["/px].')
    pixel_size_um: float = Field(10.0, gt=0, description="Physical pixel size [um].")
    detectors: tuple[DetectorGeometry, ...] = Field(min_length=1, description="The detectors.")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for attr in ("id", "name"):
            values = [getattr(d, attr) for d in self.detectors]
            if len(set(values)) != len(values):
                dupes = sorted({v for v in values if values.count(v) > 1})
                raise ValueError(f"duplicate detector {attr}s {dupes}")
        return self

    @property
    def plate_scale_arcsec_per_mm(self) -> float:
        """Plate scale ["/mm]."""
        return self.pixel_scale_arcsec * 1000.0 / self.pixel_size_um

    def detector(self, detector_id: int) -> DetectorGeometry:
        """The detector with this id."""
        for det in self.detectors:
            if det.id == detector_id:
                return det
        raise InvalidInputError(
            f"camera {self.name!r} has no detector {detector_id} "
            f"(ids {self.detectors[0].id}..{self.detectors[-1].id})"
        )

    def detector_pixel_scale(self, detector_id: int) -> float:
        """On-sky pixel scale of one detector ["/px]."""
        size = self.detector(detector_id).pixel_size_um or self.pixel_size_um
        return self.plate_scale_arcsec_per_mm * size / 1000.0


# -- built-in cameras -----------------------------------------------------------------


def toy3x3() -> Camera:
    """3x3 detectors of 2048x2048 px at 0.2"/px, 10 um pixels, 0.5 mm gaps.

    Ids 0..8 row by row from the bottom-left (focal-plane -x, -y); id 4 is centred
    on the optical axis. Names ``S<row><column>``.
    """
    pitch = 20.48 + 0.5
    detectors = [
        DetectorGeometry(
            id=3 * row + col,
            name=f"S{row}{col}",
            width=2048,
            height=2048,
            center_x_mm=(col - 1) * pitch,
            center_y_mm=(row - 1) * pitch,
        )
        for row in range(3)
        for col in range(3)
    ]
    return Camera(name="toy3x3", pixel_scale_arcsec=0.2, detectors=tuple(detectors))


def lsstcam_like() -> Camera:
    """LSSTCam's science layout: 21 rafts of 3x3 CCDs (5x5 rafts minus the corners).

    189 detectors of 4072x4000 px (ITL size), 10 um pixels at 0.2"/px; raft pitch
    127 mm, CCD pitch 42.25 mm within a raft. Names ``R<row><col>_S<row><col>`` with
    rows counted along +y; ids follow raft then sensor order, row by row, as LSSTCam's
    (``R22_S11``, the centre, is 94). A layout for preload tests, not LSSTCam's
    calibrated geometry.
    """
    raft_pitch, ccd_pitch = 127.0, 42.25
    corners = {(0, 0), (0, 4), (4, 0), (4, 4)}
    detectors = []
    for ry in range(5):
        for rx in range(5):
            if (ry, rx) in corners:
                continue
            for sy in range(3):
                for sx in range(3):
                    detectors.append(
                        DetectorGeometry(
                            id=len(detectors),
                            name=f"R{ry}{rx}_S{sy}{sx}",
                            width=4072,
                            height=4000,
                            center_x_mm=(rx - 2) * raft_pitch + (sx - 1) * ccd_pitch,
                            center_y_mm=(ry - 2) * raft_pitch + (sy - 1) * ccd_pitch,
                        )
                    )
    return Camera(name="lsstcam-like", pixel_scale_arcsec=0.2, detectors=tuple(detectors))


BUILTIN_CAMERAS = {"toy3x3": toy3x3, "lsstcam-like": lsstcam_like}


def load_camera(name_or_path: str | Path) -> Camera:
    """A built-in camera by name (``toy3x3``, ``lsstcam-like``) or a camera JSON file.

    Raises
    ------
    InvalidInputError
        Unknown name, unreadable file, or a file that does not follow the format.
    """
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_CAMERAS:
        return BUILTIN_CAMERAS[name_or_path]()
    path = Path(name_or_path)
    if not path.is_file():
        raise InvalidInputError(
            f"camera {str(name_or_path)!r} is neither a built-in "
            f"({', '.join(BUILTIN_CAMERAS)}) nor an existing file"
        )
    try:
        data = json.loads(path.read_text())
        return Camera.model_validate(data)
    except (OSError, ValueError, ValidationError) as exc:
        raise InvalidInputError(f"camera file {path}: {exc}") from exc


def write_camera(camera: Camera, path: str | Path) -> None:
    """Write ``camera`` in the JSON format :func:`load_camera` reads."""
    Path(path).write_text(camera.model_dump_json(indent=1) + "\n")


# -- predicted WCS and footprint --------------------------------------------------------


def _pixel_to_tangent(camera: Camera, detector_id: int, rotation_deg: float):
    """Affine map from 0-based detector pixels to tangent-plane (xi, eta) [deg].

    Returns ``(a, offset, center)`` with ``(xi, eta) = offset + a @ (pixel - center)``.
    """
    det = camera.detector(detector_id)
    theta = math.radians(rotation_deg)
    phi = math.radians(det.rotation_deg)
    # Focal plane (x, y) -> (xi east, eta north): +y at position angle theta, +x at
    # theta + 90 deg measured the other way (sky parity, east left at theta = 0).
    sky = np.array([[-math.cos(theta), math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    det_rot = np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
    deg_per_mm = camera.plate_scale_arcsec_per_mm / 3600.0
    mm_per_px = (det.pixel_size_um or camera.pixel_size_um) / 1000.0
    a = deg_per_mm * mm_per_px * sky @ det_rot
    offset = deg_per_mm * sky @ np.array([det.center_x_mm, det.center_y_mm])
    center = np.array([(det.width - 1) / 2.0, (det.height - 1) / 2.0])
    return a, offset, center


def predict_detector_wcs(
    camera: Camera,
    detector_id: int,
    boresight_ra: float,
    boresight_dec: float,
    rotation_deg: float,
) -> WCS:
    """The TAN WCS of one detector predicted from the pointing.

    Parameters
    ----------
    camera : Camera
        The camera geometry.
    detector_id : int
        Detector number.
    boresight_ra, boresight_dec : float
        ICRS pointing of the optical axis [deg].
    rotation_deg : float
        Sky rotation angle [deg] (position angle of focal-plane +y, east of north).

    Returns
    -------
    astropy.wcs.WCS
        Gnomonic projection about the boresight; use it with 0-based pixel coordinates
        of the detector (``pixel_to_world_values``), ``pixel_shape = (width, height)``.
    """
    a, offset, center = _pixel_to_tangent(camera, detector_id, rotation_deg)
    boresight_pixel = center - np.linalg.solve(a, offset)
    det = camera.detector(detector_id)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.crval = [boresight_ra % 360.0, boresight_dec]
    wcs.wcs.crpix = boresight_pixel + 1.0  # FITS pixels are 1-based
    wcs.wcs.cd = a
    wcs.pixel_shape = (det.width, det.height)
    wcs.wcs.set()
    return wcs


def predict_detector_footprint(
    camera: Camera,
    detector_id: int,
    boresight_ra: float,
    boresight_dec: float,
    rotation_deg: float,
    padding_arcsec: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The detector's sky polygon, each edge pushed outward by ``padding_arcsec``.

    Rubin pads the predicted footprint by 30" (PRELOAD_PADDING) to absorb pointing
    and rotation errors before it selects reference shards.

    Returns
    -------
    ra, dec : numpy.ndarray
        Four vertices [deg], RA in [0, 360), in the order of the detector's pixel
        corners (x0, y0), (x1, y0), (x1, y1), (x0, y1) (outer pixel edges).
    """
    if padding_arcsec < 0:
        raise InvalidInputError(f"padding_arcsec must be >= 0, got {padding_arcsec}")
    det = camera.detector(detector_id)
    wcs = predict_detector_wcs(camera, detector_id, boresight_ra, boresight_dec, rotation_deg)
    pad = padding_arcsec / camera.detector_pixel_scale(detector_id)
    x0, x1 = -0.5 - pad, det.width - 0.5 + pad
    y0, y1 = -0.5 - pad, det.height - 0.5 + pad
    ra, dec = wcs.pixel_to_world_values(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]))
    return np.mod(np.asarray(ra, dtype=float), 360.0), np.asarray(dec, dtype=float)
