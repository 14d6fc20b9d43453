"""Snap files and product directories under hostile input (issue 15).

Real files on disk: confinement to the input/output roots (``..``, absolute paths,
symlinks out), FIFOs and oversized or pathological files refused before any pixel is
read, files that appear late or are still being written waited for (bounded), and
storage errors retried instead of dead-lettered.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest
from astropy.io import fits

from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.io import write_exposure
from promptcal.service.inputs import InputPolicy, InputRefusedError, SnapReader, transient_cause
from promptcal.service.locations import product_dir
from promptcal.simulate import SkyConfig, simulate_exposure


@pytest.fixture(scope="module")
def snap_bytes(tmp_path_factory) -> bytes:
    """A small valid snap (afw layout), as bytes."""
    sim = simulate_exposure(SkyConfig(width=64, height=64, n_stars=5), seed=3)
    path = tmp_path_factory.mktemp("snap") / "snap.fits"
    write_exposure(sim.snaps[0], path)
    return path.read_bytes()


def _reader(roots=(), **policy) -> SnapReader:
    policy = {"file_wait": 2.0, "retries": 2, "backoff": 0.01, **policy}
    return SnapReader(InputPolicy(roots=tuple(str(r) for r in roots), **policy))


# -- output: product directories ----------------------------------------------------------


@pytest.mark.parametrize("instrument", ["..", "../x", "/etc", "a/b", "x\x00y", ".", ""])
def test_product_dir_refuses_what_would_leave_the_root(tmp_path, instrument):
    with pytest.raises(InvalidInputError):
        product_dir(tmp_path, instrument, 1, 2)


def test_product_dir_refuses_a_symlink_out_of_the_root(tmp_path):
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "ToyCam").symlink_to(elsewhere)
    with pytest.raises(InvalidInputError, match="outside"):
        product_dir(root, "ToyCam", 1, 2)
    (root / "Inside").symlink_to(root / "ToyCam2", target_is_directory=True)
    (root / "ToyCam2").mkdir()
    assert product_dir(root, "Inside", 1, 2) == root / "Inside" / "1" / "2"


def test_product_dir_refuses_out_of_range_ids(tmp_path):
    with pytest.raises(InvalidInputError, match="out of range"):
        product_dir(tmp_path, "ToyCam", 2**63, 0)


# -- input: confinement -------------------------------------------------------------------


def test_snaps_inside_the_roots_are_read_with_their_real_path(tmp_path, snap_bytes):
    root = tmp_path / "raw"
    (root / "night").mkdir(parents=True)
    target = root / "night" / "a.fits"
    target.write_bytes(snap_bytes)
    (root / "link.fits").symlink_to(target)  # a symlink that stays inside is fine
    (root / "x").mkdir()
    for uri in (target.as_uri(), str(root / "link.fits"), str(root / "x" / ".." / "night/a.fits")):
        exposure, real = _reader([root]).read(uri, "r")
        assert real == target and exposure.image.shape == (64, 64)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "dir-symlink", "relative"])
def test_snaps_outside_the_roots_are_refused(tmp_path, snap_bytes, how):
    root, outside = tmp_path / "raw", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (outside / "s.fits").write_bytes(snap_bytes)
    uri = {
        "absolute": str(outside / "s.fits"),
        "dotdot": str(root / ".." / "secret" / "s.fits"),
        "symlink": str(root / "s.fits"),
        "dir-symlink": str(root / "d" / "s.fits"),
        "relative": "secret/s.fits",
    }[how]
    (root / "s.fits").symlink_to(outside / "s.fits")
    (root / "d").symlink_to(outside)
    with pytest.raises(InvalidInputError, match=r"outside|relative"):
        _reader([root]).read(uri, "r")
    # Without roots (the old behaviour) the same file is read: the check is what refuses it.
    if how != "relative":
        _reader().read(uri, "r")


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.fits"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(InputRefusedError, match="not a regular file"):
        _reader([tmp_path]).read(str(fifo), "r")
    assert time.monotonic() - started < 1.0


# -- input: limits --------------------------------------------------------------------------


def test_an_oversized_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.fits"
    with open(big, "wb") as f:
        f.truncate(3 * 2**20)  # sparse: 3 MiB on paper
    with pytest.raises(InputRefusedError, match="bytes, more than"):
        _reader([tmp_path], max_file_bytes=2**20).read(str(big), "r")


@pytest.mark.parametrize("compressed", [False, True])
def test_a_huge_image_is_refused_from_its_header(tmp_path, compressed):
    """50 000 × 50 000 px claimed in the header: refused before any pixel is allocated."""
    path = tmp_path / "huge.fits"
    header = fits.Header()
    if compressed:  # a small file that would decompress into 10 GB
        header.update({"XTENSION": "BINTABLE", "BITPIX": 8, "NAXIS": 2, "NAXIS1": 8})
        header.update({"NAXIS2": 1, "PCOUNT": 0, "GCOUNT": 1, "TFIELDS": 1, "TFORM1": "1PB(0)"})
        header.update({"ZIMAGE": True, "ZBITPIX": 32, "ZNAXIS": 2, "ZNAXIS1": 50_000})
        header.update({"ZNAXIS2": 50_000, "ZCMPTYPE": "RICE_1"})
        primary = fits.PrimaryHDU().header.tostring().encode()
        path.write_bytes(primary + header.tostring().encode() + b"\0" * 2880)
    else:
        header.update({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2})
        header.update({"NAXIS1": 50_000, "NAXIS2": 50_000})
        with open(path, "wb") as f:
            f.write(header.tostring().encode())
            f.truncate(2880 + 4 * 50_000 * 50_000)  # sparse, 10 GB on paper
    with pytest.raises(InputRefusedError, match="pixels, more than"):
        _reader([tmp_path], max_file_bytes=2**40).read(str(path), "r")


# -- input: late and incomplete files -------------------------------------------------------


def test_a_file_that_appears_late_is_waited_for(tmp_path, snap_bytes):
    path = tmp_path / "late.fits"
    timer = threading.Timer(0.6, lambda: path.write_bytes(snap_bytes))
    timer.start()
    started = time.monotonic()
    exposure, _ = _reader([tmp_path], file_wait=5.0).read(str(path), "r")
    timer.join()
    assert 0.5 < time.monotonic() - started < 4.0
    assert exposure.image.shape == (64, 64)


def test_a_file_still_being_written_is_waited_for(tmp_path, snap_bytes):
    path = tmp_path / "growing.fits"
    path.write_bytes(snap_bytes[: len(snap_bytes) // 3])

    def finish() -> None:
        with open(path, "ab") as f:
            f.write(snap_bytes[len(snap_bytes) // 3 :])

    timer = threading.Timer(0.6, finish)
    timer.start()
    exposure, _ = _reader([tmp_path], file_wait=5.0).read(str(path), "r")
    timer.join()
    assert np.array_equal(exposure.image, _reader().read(str(path), "r")[0].image, equal_nan=True)


def test_an_old_truncated_file_is_a_dead_letter_at_once(tmp_path, snap_bytes):
    path = tmp_path / "truncated.fits"
    path.write_bytes(snap_bytes[: len(snap_bytes) // 2])
    old = time.time() - 3600
    os.utime(path, (old, old))
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=str(path)):
        _reader([tmp_path], file_wait=5.0).read(str(path), "r")
    assert time.monotonic() - started < 2.0


def test_a_file_that_never_comes_is_a_dead_letter_after_the_wait(tmp_path):
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=r"does not exist \(waited 0.5 s\)"):
        _reader([tmp_path], file_wait=0.5).read(str(tmp_path / "never.fits"), "r")
    assert 0.5 <= time.monotonic() - started < 3.0


# -- input: storage errors ------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.ESTALE])
def test_storage_errors_are_retried_not_dead_lettered(tmp_path, snap_bytes, code):
    """The FITS reader wraps every OSError in InvalidInputError; the cause decides."""
    path = tmp_path / "s.fits"
    path.write_bytes(snap_bytes)
    failures = [2]

    def flaky_read(fd_path, band):
        from promptcal.io import read_exposure

        if failures[0] > 0:
            failures[0] -= 1
            try:
                raise OSError(code, os.strerror(code))
            except OSError as exc:
                raise InvalidInputError(f"{fd_path}: not a readable FITS file") from exc
        return read_exposure(fd_path, band=band)

    policy = InputPolicy(roots=(str(tmp_path),), retries=3, backoff=0.01)
    exposure, _ = SnapReader(policy, read=flaky_read).read(str(path), "r")
    assert exposure.image.shape == (64, 64) and failures == [0]
    failures[0] = 99
    with pytest.raises(TransientError, match="after 3 retries"):
        SnapReader(policy, read=flaky_read).read(str(path), "r")


def test_transient_cause_follows_the_chain():
    try:
        try:
            raise OSError(errno.ESTALE, "stale")
        except OSError as exc:
            raise InvalidInputError("wrapped") from exc
    except InvalidInputError as wrapped:
        assert transient_cause(wrapped).errno == errno.ESTALE
    assert transient_cause(InvalidInputError("plain")) is None
    assert transient_cause(OSError(errno.ENOENT, "gone")) is None
