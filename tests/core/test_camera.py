"""Camera geometry and predicted WCS/footprints, against an independent gnomonic oracle."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from promptcal.core.camera import (
    Camera,
    DetectorGeometry,
    load_camera,
    predict_detector_footprint,
    predict_detector_wcs,
    write_camera,
)
from promptcal.core.errors import InvalidInputError

ARCSEC = 1.0 / 3600.0


def tan_deproject(xi_deg, eta_deg, ra0, dec0):
    """Gnomonic projection plane (xi east, eta north) [deg] -> (ra, dec) [deg]."""
    xi, eta = np.radians(xi_deg), np.radians(eta_deg)
    d0 = math.radians(dec0)
    denom = math.cos(d0) - eta * math.sin(d0)
    ra = math.radians(ra0) + np.arctan2(xi, denom)
    dec = np.arctan2(math.sin(d0) + eta * math.cos(d0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def separation_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle distance (haversine) ["]."""
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0


def corners_mm(camera: Camera, det: DetectorGeometry) -> np.ndarray:
    """The detector's outer corners in the focal plane [mm], (4, 2)."""
    size = (det.pixel_size_um or camera.pixel_size_um) / 1000.0
    hw, hh = det.width * size / 2, det.height * size / 2
    phi = math.radians(det.rotation_deg)
    rot = np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
    local = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
    return local @ rot.T + [det.center_x_mm, det.center_y_mm]


def convex_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons (touching counts as apart)."""
    for poly in (a, b):
        for i in range(len(poly)):
            edge = poly[(i + 1) % len(poly)] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


def test_lsstcam_like_has_189_detectors_in_21_rafts_without_overlap():
    camera = load_camera("lsstcam-like")
    assert len(camera.detectors) == 189
    assert len({d.name.split("_")[0] for d in camera.detectors}) == 21
    assert not {"R00", "R04", "R40", "R44"} & {d.name[:3] for d in camera.detectors}
    assert camera.detector(94).name == "R22_S11"
    assert (camera.detector(94).center_x_mm, camera.detector(94).center_y_mm) == (0.0, 0.0)
    polygons = [corners_mm(camera, d) for d in camera.detectors]
    # Only neighbours can overlap; prune by centre distance, then test exactly.
    centres = np.array([p.mean(axis=0) for p in polygons])
    n_tested = 0
    for i, j in itertools.combinations(range(len(polygons)), 2):
        if np.hypot(*(centres[i] - centres[j])) < 60.0:
            n_tested += 1
            assert not convex_overlap(polygons[i], polygons[j]), (i, j)
    assert n_tested > 189  # each detector was tested against its neighbours


def test_toy3x3_layout_and_no_overlap():
    camera = load_camera("toy3x3")
    assert [d.id for d in camera.detectors] == list(range(9))
    assert camera.plate_scale_arcsec_per_mm == pytest.approx(20.0)
    polygons = [corners_mm(camera, d) for d in camera.detectors]
    for a, b in itertools.combinations(polygons, 2):
        assert not convex_overlap(a, b)
    assert convex_overlap(polygons[0], polygons[0] + [10.0, 0.0])  # the test can fail


def test_centre_detector_footprint_contains_boresight_and_has_the_right_size():
    camera = load_camera("toy3x3")
    ra0, dec0 = 150.0, 2.0
    ra, dec = predict_detector_footprint(camera, 4, ra0, dec0, 0.0, padding_arcsec=0.0)
    side = 2048 * 0.2  # ["]
    # Centre detector, rotation 0: +y north, +x west, so corner (x0, y0) is south-east.
    xi = np.array([side, -side, -side, side]) / 2 * ARCSEC
    eta = np.array([-side, -side, side, side]) / 2 * ARCSEC
    exp_ra, exp_dec = tan_deproject(xi, eta, ra0, dec0)
    assert separation_arcsec(ra, dec, exp_ra, exp_dec) == pytest.approx(0.0, abs=1e-4)
    for k in range(4):
        edge = separation_arcsec(ra[k], dec[k], ra[(k + 1) % 4], dec[(k + 1) % 4])
        assert edge == pytest.approx(side, rel=1e-4)
    # The boresight is inside: it projects to the detector centre.
    wcs = predict_detector_wcs(camera, 4, ra0, dec0, 0.0)
    x, y = wcs.world_to_pixel_values(ra0, dec0)
    assert (x, y) == pytest.approx((1023.5, 1023.5), abs=1e-6)
    assert np.linalg.det(wcs.wcs.cd) < 0  # east-left parity


@pytest.mark.parametrize("rotation", [0.0, 90.0])
def test_rotation_maps_an_off_axis_corner_where_expected(rotation):
    camera = load_camera("toy3x3")
    ra0, dec0 = 359.99, -60.0  # near RA wrap and at high |dec|
    # Detector 0 (bottom-left): its pixel corner (x0, y0) is at focal plane
    # (-20.98 - 10.24, -20.98 - 10.24) mm; 20 "/mm.
    u = v = -(20.98 + 10.24) * 20.0 * ARCSEC
    if rotation == 0.0:  # +y north, +x west
        xi, eta = -u, v
    else:  # rotated 90 deg east of north: +y east, +x north
        xi, eta = v, u
    exp_ra, exp_dec = tan_deproject(np.array([xi]), np.array([eta]), ra0, dec0)
    ra, dec = predict_detector_footprint(camera, 0, ra0, dec0, rotation, padding_arcsec=0.0)
    assert separation_arcsec(ra[0], dec[0], exp_ra[0], exp_dec[0]) < 1e-3
    assert np.all((ra >= 0) & (ra < 360))


def test_detector_rotation_in_the_focal_plane():
    # One detector rotated by 90 deg: its +x axis runs along focal-plane +y (north).
    det = DetectorGeometry(
        id=0, name="D", width=100, height=50, center_x_mm=5.0, center_y_mm=0.0, rotation_deg=90.0
    )
    camera = Camera(name="rot", pixel_scale_arcsec=0.5, pixel_size_um=15.0, detectors=(det,))
    wcs = predict_detector_wcs(camera, 0, 10.0, 0.0, 0.0)
    ra, dec = wcs.pixel_to_world_values(np.array([49.5, 59.5]), np.array([24.5, 24.5]))
    # Centre at focal-plane x = 5 mm = 5000/15 px * 0.5" west of the boresight.
    exp_ra, exp_dec = tan_deproject(np.array([-5000 / 15 * 0.5 * ARCSEC]), np.array([0.0]), 10, 0)
    assert separation_arcsec(ra[0], dec[0], exp_ra[0], exp_dec[0]) < 1e-4
    # Ten pixels along detector +x move 5" north.
    assert dec[1] - dec[0] == pytest.approx(5.0 * ARCSEC, rel=1e-6)
    assert ra[1] == pytest.approx(ra[0], abs=1e-9)


def test_padding_pushes_every_edge_out_by_30_arcsec():
    camera = load_camera("lsstcam-like")
    args = (camera, 60, 35.0, -20.0, 33.0)
    ra, dec = predict_detector_footprint(*args, padding_arcsec=0.0)
    pra, pdec = predict_detector_footprint(*args, padding_arcsec=30.0)

    def edge_midpoints(r, d):
        pairs = [(k, (k + 1) % 4) for k in range(4)]
        return [((r[i] + r[j]) / 2, (d[i] + d[j]) / 2) for i, j in pairs]

    for (r1, d1), (r2, d2) in zip(edge_midpoints(ra, dec), edge_midpoints(pra, pdec), strict=True):
        assert separation_arcsec(r1, d1, r2, d2) == pytest.approx(30.0, rel=2e-3)
    for k in range(4):  # corners move diagonally
        assert separation_arcsec(ra[k], dec[k], pra[k], pdec[k]) == pytest.approx(
            30.0 * math.sqrt(2), rel=2e-3
        )


def test_camera_file_round_trip_and_errors(tmp_path):
    camera = load_camera("toy3x3")
    path = tmp_path / "cam.json"
    write_camera(camera, path)
    assert load_camera(path) == camera
    data = json.loads(path.read_text())
    data["detectors"][1]["id"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="duplicate detector ids"):
        load_camera(path)
    with pytest.raises(InvalidInputError, match="neither a built-in"):
        load_camera("hsc")
    with pytest.raises(InvalidInputError, match="no detector 9"):
        camera.detector(9)
    with pytest.raises(InvalidInputError, match="padding"):
        predict_detector_footprint(camera, 4, 0.0, 0.0, 0.0, padding_arcsec=-1.0)
