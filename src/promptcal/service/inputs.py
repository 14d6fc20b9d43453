"""Open and read the snap files of ``image-ready`` messages, within limits.

A snap URI comes from a message, so nothing about it is trusted (issue 15):

- **Confinement**: the file is opened first and its real path (``/proc/self/fd``, so a
  symlink swapped after a check cannot redirect the read) must lie under one of the
  configured input roots; it must be a regular file (no FIFO that blocks, no device
  that never ends).
- **Limits**: at most ``max_file_bytes`` on disk and ``max_pixels`` per image plane
  (read from the headers, compressed images by their uncompressed size) before any
  pixel is loaded, so one huge file cannot OOM-kill every worker in turn.
- **Not yet there**: a file that does not exist yet, or that fails to parse while it is
  still being written (it changed during the read, or was modified within the last
  ``file_wait`` seconds), is tried again until ``file_wait`` seconds have passed; then
  it is an :class:`~promptcal.core.errors.InvalidInputError` (a dead letter).
- **Storage errors** (``EIO``, ``ESTALE``, ...; also when the FITS reader wrapped them)
  are retried with backoff, then raised as :class:`~promptcal.core.errors.TransientError`
  (the worker stops without committing; the exposure is redone elsewhere).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.service.locations import confine, uri_to_path
from promptcal.service.retries import retry_delays

logger = logging.getLogger(__name__)

#: ``errno`` values of storage trouble that may go away (network file systems, disks).
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.ESTALE,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ENOLCK,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
    }
)
#: Default largest snap file [bytes] (a 4k×4k afw exposure is ~200 MB).
DEFAULT_MAX_FILE_BYTES = 2**30
#: Default largest image plane [pixels] (4× an LSSTCam detector).
DEFAULT_MAX_PIXELS = 2**26
#: Wait between looks at a file that is not there or not complete yet [s].
POLL_STEP = 0.25
#: FITS block size [bytes]; most HDUs a snap may have; longest header [blocks].
FITS_BLOCK, MAX_HDUS, MAX_HEADER_BLOCKS = 2880, 1000, 1000


class InputRefusedError(InvalidInputError):
    """A snap outside the input roots or beyond the size limits (never retried)."""


@dataclass(frozen=True)
class InputPolicy:
    """Where snaps may be read from and how big they may be.

    Attributes
    ----------
    roots : tuple of str
        Directories snap files must resolve into; empty: anywhere (logged at start).
    max_file_bytes : int
        Largest snap file [bytes].
    max_pixels : int
        Largest image plane [pixels].
    file_wait : float
        How long a missing or still-growing file is waited for [s].
    retries, backoff : int, float
        Retries of a storage error and the first wait [s] (doubled each time).
    """

    roots: tuple[str, ...] = ()
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    file_wait: float = 10.0
    retries: int = 5
    backoff: float = 0.5


def transient_cause(exc: BaseException) -> OSError | None:
    """The storage ``OSError`` (errno in :data:`TRANSIENT_ERRNOS`) behind ``exc``, if any."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 20:
        if isinstance(current, OSError) and current.errno in TRANSIENT_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _fd_path(fd: int, fallback: Path) -> str:
    """A path that reopens exactly the file behind ``fd`` (Linux), else ``fallback``."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else os.fspath(fallback)


def _header_cards(stream, name: str) -> dict[str, str] | None:
    """The ``KEY = value`` cards of the header at the current position (``None``: EOF)."""
    cards: dict[str, str] = {}
    for _ in range(MAX_HEADER_BLOCKS):
        block = stream.read(FITS_BLOCK)
        if len(block) < FITS_BLOCK:
            return None if not cards else cards
        for i in range(0, FITS_BLOCK, 80):
            card = block[i : i + 80].decode("ascii", "replace")
            key = card[:8].strip()
            if key == "END":
                return cards
            if card[8:10] == "= ":
                cards[key] = card[10:].split("/", 1)[0].strip()
    raise InputRefusedError(f"{name}: a header longer than {MAX_HEADER_BLOCKS} blocks")


def _int_card(cards: dict[str, str], key: str, default: int = 0) -> int:
    try:
        return int(cards.get(key, default))
    except ValueError:
        return default


def check_pixels(path: str, max_pixels: int, name: str) -> None:
    """Raise InputRefusedError if an image plane of the FITS file has > ``max_pixels``.

    Only the headers are read, block by block (the data are skipped by their declared
    size), so a file that claims 50 000 × 50 000 px costs a few reads; a compressed
    image counts by its uncompressed size (``ZNAXISn``).
    """
    with open(path, "rb") as stream:
        offset = 0
        for index in range(MAX_HDUS + 1):
            stream.seek(offset)
            cards = _header_cards(stream, name)
            if cards is None:
                return
            if index == MAX_HDUS:
                raise InputRefusedError(f"{name}: more than {MAX_HDUS} HDUs")
            prefix = "ZNAXIS" if cards.get("ZIMAGE", "F") == "T" else "NAXIS"
            pixels = 1
            for axis in range(1, _int_card(cards, prefix) + 1):
                pixels *= max(0, _int_card(cards, f"{prefix}{axis}"))
            if _int_card(cards, prefix) and pixels > max_pixels:
                raise InputRefusedError(
                    f"{name}: HDU {index} has {pixels} pixels, more than the {max_pixels} allowed"
                )
            n_axes = _int_card(cards, "NAXIS")
            data = 0
            if n_axes:
                data = 1
                for axis in range(1, n_axes + 1):
                    data *= max(0, _int_card(cards, f"NAXIS{axis}"))
                data = (
                    abs(_int_card(cards, "BITPIX", 8))
                    // 8
                    * _int_card(cards, "GCOUNT", 1)
                    * (_int_card(cards, "PCOUNT") + data)
                )
            offset = stream.tell() + -(-data // FITS_BLOCK) * FITS_BLOCK


class SnapReader:
    """Read snap files under an :class:`InputPolicy`.

    Parameters
    ----------
    policy : InputPolicy
    read : callable
        ``read(path, band)`` -> exposure (default :func:`promptcal.io.read_exposure`).
    clock, sleep : callable
        Monotonic time [s] and sleep (injectable for tests).
    """

    def __init__(
        self,
        policy: InputPolicy,
        *,
        read: Callable | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self._read = read
        self._clock = clock
        self._sleep = sleep

    def read(
        self,
        uri: str,
        band: str | None,
        *,
        weight_uri: str | None = None,
        mask_uri: str | None = None,
        saturation: float | None = None,
    ):
        """The exposure of one snap and the file's real path (with its weight and mask
        files, confined like the snap, and the camera's saturation level [count]).

        Raises
        ------
        InvalidInputError
            Refused (outside the roots, not a regular file, too big), still missing or
            incomplete after ``file_wait``, or not a readable exposure.
        TransientError
            Storage errors beyond the retries.
        """
        path = uri_to_path(uri)
        if self.policy.roots and not path.is_absolute():
            raise InvalidInputError(f"snap URI {uri!r}: a relative path cannot be confined")
        extras = {
            "weight_path": self._companion(weight_uri, "weight file"),
            "mask_path": self._companion(mask_uri, "mask file"),
            "saturation": saturation,
        }
        deadline = self._clock() + self.policy.file_wait
        delays = iter(retry_delays(self.policy.retries, self.policy.backoff))
        while True:
            try:
                return self._attempt(path, band, deadline, extras)
            except _TryAgain as again:
                logger.info("%s; looking again in %.2f s", again, POLL_STEP)
                self._sleep(POLL_STEP)
            except OSError as exc:
                delay = next(delays, None)
                if delay is None:
                    raise TransientError(
                        f"reading {path}: {exc} (after {self.policy.retries} retries)"
                    ) from exc
                logger.warning("reading %s: %s; retrying in %.2f s", path, exc, delay)
                self._sleep(delay)

    def _companion(self, uri: str | None, what: str) -> Path | None:
        """The path of a weight or mask file, confined to the input roots."""
        if uri is None:
            return None
        path = uri_to_path(uri)
        if self.policy.roots:
            return Path(confine(os.fspath(path), self.policy.roots, what=what))
        return path

    def _attempt(self, path: Path, band: str | None, deadline: float, extras: dict):
        policy = self.policy
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            if self._clock() < deadline:
                raise _TryAgain(f"snap file {path} does not exist yet") from exc
            raise InvalidInputError(
                f"snap file {path} does not exist (waited {policy.file_wait:.1f} s)"
            ) from exc
        except ValueError as exc:  # NUL byte
            raise InvalidInputError(f"snap path {path!r}: {exc}") from exc
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS:
                raise
            raise InvalidInputError(f"snap file {path}: {exc}") from exc
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise InputRefusedError(f"snap {path} is not a regular file")
            fd_path = _fd_path(fd, path)
            real = path
            if policy.roots:
                try:
                    real = confine(fd_path, policy.roots, what="snap file")
                except InvalidInputError as exc:
                    raise InputRefusedError(str(exc).replace(fd_path, os.fspath(path))) from exc
            if before.st_size > policy.max_file_bytes:
                raise InputRefusedError(
                    f"snap file {path}: {before.st_size} bytes, more than the "
                    f"{policy.max_file_bytes} allowed"
                )
            try:
                check_pixels(fd_path, policy.max_pixels, os.fspath(path))
                exposure = self._read_exposure(fd_path, band, extras)
            except InputRefusedError:
                raise
            except InvalidInputError as exc:
                if transient_cause(exc) is not None:
                    raise transient_cause(exc) from exc
                after = os.fstat(fd)
                changed = (after.st_size, after.st_mtime_ns) != (
                    before.st_size,
                    before.st_mtime_ns,
                )
                fresh = time.time() - after.st_mtime < policy.file_wait
                if (changed or fresh) and self._clock() < deadline:
                    raise _TryAgain(f"snap file {path} incomplete ({exc})") from exc
                raise InvalidInputError(str(exc).replace(fd_path, os.fspath(path))) from exc
            return exposure, Path(real)
        finally:
            os.close(fd)

    def _read_exposure(self, path: str, band: str | None, extras: dict):
        if self._read is not None:
            return self._read(path, band)
        from promptcal.io import read_exposure

        return read_exposure(path, band=band, **extras)


class _TryAgain(Exception):
    """The file is not there or not complete yet; look again shortly."""


def read_snaps(reader: SnapReader, uris_and_bands: Sequence[tuple[str, str | None]]):
    """Read several snaps; ``(exposures, real paths)``."""
    exposures, paths = [], []
    for uri, band in uris_and_bands:
        exposure, path = reader.read(uri, band)
        exposures.append(exposure)
        paths.append(path)
    return exposures, paths
