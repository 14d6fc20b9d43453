"""Direct-I/O file writer: exact bytes and length for any size, and the fallback."""

from __future__ import annotations

import errno
import itertools
import os

import numpy as np
import pytest

from promptcal.io import direct
from promptcal.io.direct import ALIGNMENT, CHUNK_BYTES, DirectFileWriter

SIZES = [0, 1, ALIGNMENT - 1, ALIGNMENT, CHUNK_BYTES - 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 7]


def _payload(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("size", SIZES)
def test_bytes_and_length_survive_any_size(tmp_path, size):
    data = _payload(size, size)
    path = tmp_path / "f.bin"
    with DirectFileWriter(path) as out:
        # Uneven pieces cross the staging-buffer boundary at arbitrary offsets.
        cuts = sorted({0, size, size // 3, min(size, size // 2 + 1)})
        for a, b in itertools.pairwise(cuts):
            assert out.write(data[a:b]) == b - a
        assert out.tell() == size
    assert path.stat().st_size == size
    assert path.read_bytes() == data


def test_numpy_arrays_are_written_as_their_bytes(tmp_path):
    plane = np.arange(3 * 1000 * 1001, dtype=">f4").reshape(3000, 1001)
    path = tmp_path / "plane.bin"
    with DirectFileWriter(path) as out:
        out.write(plane)
    assert np.array_equal(np.fromfile(path, ">f4").reshape(plane.shape), plane)


def test_staging_buffers_are_reused_and_never_shared(tmp_path):
    first = DirectFileWriter(tmp_path / "a")
    second = DirectFileWriter(tmp_path / "b")
    assert first._buffer is not second._buffer
    buffer = first._buffer
    first.write(b"a" * 10)
    second.write(b"b" * 10)
    first.close()
    second.close()
    third = DirectFileWriter(tmp_path / "c")
    assert third._buffer in (buffer, second._buffer)  # from the pool, not a new mapping
    third.close()
    assert (tmp_path / "a").read_bytes() == b"a" * 10
    assert (tmp_path / "b").read_bytes() == b"b" * 10


def test_file_systems_without_direct_io_fall_back_to_buffered_writes(tmp_path, monkeypatch):
    real_open = os.open

    def refuse_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct.os, "open", refuse_direct)
    data = _payload(ALIGNMENT + 5, 1)
    with DirectFileWriter(tmp_path / "f") as out:
        assert not out.direct
        out.write(data)
    assert (tmp_path / "f").read_bytes() == data  # no alignment padding left behind


def test_other_open_errors_are_raised(tmp_path):
    with pytest.raises(FileNotFoundError):
        DirectFileWriter(tmp_path / "no" / "such" / "dir" / "f")


def test_writing_after_close_is_an_error(tmp_path):
    out = DirectFileWriter(tmp_path / "f")
    out.close()
    out.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        out.write(b"x")


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float64, np.int16])
@pytest.mark.parametrize("lead", [0, 3, CHUNK_BYTES - 2])
def test_big_endian_values_straight_into_the_file(tmp_path, dtype, lead):
    """Values straddling the staging-buffer end (after ``lead`` odd bytes) included."""
    values = (np.arange(7 * (CHUNK_BYTES // 28 + 143)) * 7 - 5000).astype(dtype).reshape(-1, 7)
    path = tmp_path / "f"
    with DirectFileWriter(path) as out:
        out.write(b"h" * lead)
        assert out.write_big_endian(values) == values.nbytes
        out.write(b"t")
        assert out.tell() == lead + values.nbytes + 1
    expected = b"h" * lead + values.astype(values.dtype.newbyteorder(">")).tobytes() + b"t"
    assert path.read_bytes() == expected
    assert values.dtype.isnative  # the caller's array is never swapped
