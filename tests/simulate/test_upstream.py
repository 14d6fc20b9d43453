"""The upstream fixture (promptcal.simulate.upstream): the numbers of the LSST test
dataset, its snaps and its bad-centroid variant.
"""

from __future__ import annotations

import numpy as np
import pytest

from promptcal.simulate import refcat_table_from_truth
from promptcal.simulate.upstream import (
    CENTROIDS,
    K_VALUES,
    make_bad_centroid_variant,
    make_upstream_dataset,
    make_upstream_snaps,
)


def test_upstream_fixture_numbers():
    data = make_upstream_dataset()
    exp = data.exposure
    assert exp.image.shape == (181, 201) and exp.xy0 == (5, 4)
    assert exp.bbox == (5, 4, 205, 184)
    centre = exp.wcs.pixel_to_world(105, 94)
    assert centre.ra.deg == pytest.approx(245.0, abs=1e-12)
    assert centre.dec.deg == pytest.approx(-45.0, abs=1e-12)
    east = exp.wcs.pixel_to_world(104, 94)
    assert centre.separation(east).arcsec == pytest.approx(0.2, rel=1e-6)
    assert centre.position_angle(east).deg == pytest.approx(90.0, abs=1e-4)
    assert np.all(exp.variance == 100.0)
    assert exp.metadata["TRUTH_CALIBRATION"] == 12.3
    assert exp.metadata["PSF_FWHM"] == pytest.approx(4.7096, abs=1e-4)
    assert exp.visit_info.exposure_id == 1234 and exp.visit_info.exposure_time == 30.0
    assert exp.visit_info.date.mjd == 60000.0 and exp.detector.id == 12
    assert exp.photo_calib is None and exp.band == "truth"

    t = data.truth
    psf_scale = np.sqrt(4 * np.pi * 4.0)
    np.testing.assert_allclose(
        t["truth_instFlux"], np.array([*K_VALUES, 500]) * 10 * psf_scale, rtol=1e-12
    )
    np.testing.assert_allclose(t["truth_flux"], t["truth_instFlux"] * 12.3)
    np.testing.assert_allclose(t["truth_mag"], 31.4 - 2.5 * np.log10(t["truth_flux"]))
    assert list(t["is_extended"]) == [False] * 6 + [True]
    assert [(r["x"], r["y"]) for r in t[:6]] == list(CENTROIDS)
    ra, dec = exp.wcs.all_pix2world(t["x"], t["y"], 0)
    np.testing.assert_allclose(t["ra"], ra)
    np.testing.assert_allclose(t["dec"], dec)

    # Pixel truth: each source's flux within 5σ_psf (extended: wider), and its moments.
    yy, xx = np.mgrid[0:181, 0:201].astype(float)
    xx += 5
    yy += 4
    for row in t:
        r = np.hypot(xx - row["x"], yy - row["y"])
        aperture = r <= (25 if row["is_extended"] else 12)
        got = data.truth_image[aperture].sum()
        assert got == pytest.approx(row["truth_instFlux"], rel=2e-3 if row["is_extended"] else 1e-5)
    ext = t[6]
    w = data.truth_image * (np.hypot(xx - 100, yy - 100) < 40)
    dx, dy = xx - 100, yy - 100
    mom = np.array([(w * dx * dx).sum(), (w * dy * dy).sum(), (w * dx * dy).sum()]) / w.sum()
    np.testing.assert_allclose(mom, [ext["truth_xx"], ext["truth_yy"], ext["truth_xy"]], rtol=0.01)
    assert tuple(mom.round(1)) == (12.0, 13.0, 3.0)

    # Noise: upstream's RandomState(1).randn × 10, then +500 on the image only.
    noise = exp.image - data.truth_image - 500.0
    np.testing.assert_allclose(noise, np.random.RandomState(1).randn(181, 201) * 10, atol=1e-3)
    assert np.median(exp.image) == pytest.approx(500.0, abs=1.0)
    np.testing.assert_array_equal(data.original_image, exp.image)
    # DETECTED: source centres in, a far corner out.
    det = exp.mask.is_set("DETECTED")
    for row in t:
        assert det[int(row["y"]) - 4, int(row["x"]) - 5]
    assert not det[0, 0] and 0.02 < det.mean() < 0.2
    # Unpacks like a tuple, and builds a refcat in the "truth" band.
    exposure, truth, truth_image = data
    assert exposure is exp and truth is t and truth_image is data.truth_image
    ref = refcat_table_from_truth(t, t.meta["band"])
    np.testing.assert_allclose(ref["truth_flux"], t["truth_flux"])
    assert len(ref) == 7 and np.all(ref["truth_fluxErr"] > 0)


def test_upstream_snaps_and_bad_centroids():
    base = make_upstream_dataset()
    s0, s1 = make_upstream_snaps()
    np.testing.assert_array_equal(s0.image, base.exposure.image / 2)
    np.testing.assert_array_equal(s1.image, s0.image)
    assert np.all(s0.variance == 50.0) and s1 is not s0

    bad = make_bad_centroid_variant()
    img, ref = bad.exposure.image, base.exposure.image
    for (px, py), _k in zip(CENTROIDS, K_VALUES, strict=True):
        iy, ix = py - 4, px - 5
        # Centre keeps 1 − 1/1.1 of its excess (the gradient adds < 0.45 count).
        assert img[iy, ix] - 500 == pytest.approx((ref[iy, ix] - 500) / 11, abs=0.45)
        assert np.all(img[iy + 7 : iy + 10, ix] == ref[iy + 7 : iy + 10, ix])
    assert img[100 - 4, 100 - 5] == 500.0
    changed = img != ref
    assert 0 < changed.sum() < 6 * 100 + 1
    assert np.abs(img - ref)[~changed].max() == 0
    holes = np.zeros(img.shape, bool)
    for px, py in CENTROIDS:
        holes[py - 5 : py - 2, px - 6 : px - 3] = True
    holes[96, 95] = True
    assert np.abs(img - ref)[changed & ~holes].max() < 0.45  # 170 / flux(k=6): gentle
    assert (img - ref)[changed & ~holes].min() > 0
