"""Atomic and durable file writes shared by every product writer.

A product is written to a temporary name in its directory and renamed into place, so
readers never see a partial file and a replay overwrites atomically; durability
(``fsync``) is a separate step, :func:`sync_paths` (and :func:`sync_directories` for
the parents of new directories).

A process killed mid-write leaves its temporary file behind (~200 MB for a 4k×4k
calexp). The name says who wrote it, ``.<name>.<random>.<pid>@<host>.tmp``, so that
:func:`remove_stale_temporaries` can remove the files of writers that are gone (same
host, process dead or this very process) or silent for too long, and leave those of
live writers alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from promptcal.core.crashpoints import crash_point

#: Temporary product files: ``.<name>.<random>.<pid>@<host>.tmp``.
TEMP_PATTERN = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[^/@]+)\.tmp$")


def temp_owner() -> str:
    """``<pid>@<host>``: who writes this process's temporary files."""
    return f"{os.getpid()}@{socket.gethostname()}"


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same directory)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=f".{temp_owner()}.tmp"
    )
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; products are meant to be shared
        crash_point("before_rename")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def sync_paths(paths, *, drop_cache: bool = False, missing_ok: bool = False) -> list[Path]:
    """``fsync`` each file, then each distinct parent directory (so the renames that
    put them in place survive a crash too).

    Parameters
    ----------
    paths : iterable of path
        Files written earlier (e.g. with ``durable=False``).
    drop_cache : bool
        Then evict the files' pages from the page cache (``POSIX_FADV_DONTNEED``;
        they are clean after the fsync), so a worker's page cache does not grow by
        its products every exposure. Later readers read from disk instead. (The
        calexp itself bypasses the cache: :mod:`promptcal.io.direct`.)
    missing_ok : bool
        Skip files that no longer exist (removed after they were written) instead of
        raising ``FileNotFoundError``.

    Returns
    -------
    list of pathlib.Path
        The files that were missing (empty unless ``missing_ok``).
    """
    directories: dict[str, None] = {}
    can_drop = drop_cache and hasattr(os, "posix_fadvise")
    missing: list[Path] = []
    for path in paths:
        try:
            fd = os.open(os.fspath(path), os.O_RDONLY)
        except FileNotFoundError:
            if not missing_ok:
                raise
            missing.append(Path(path))
            continue
        try:
            os.fsync(fd)
            if can_drop:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        directories[os.path.dirname(os.path.abspath(path))] = None
    for directory in directories:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return missing


def sync_directories(directories: Iterable[str | os.PathLike[str]]) -> None:
    """``fsync`` each directory, so that the entries created in it (new subdirectories,
    renamed files) survive a machine crash."""
    for directory in dict.fromkeys(os.fspath(d) for d in directories):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _writer_gone(pid: int, host: str) -> bool:
    """Whether the process that owns a temporary file is certainly not writing it."""
    if host != socket.gethostname():
        return False  # another machine: only its age tells
    if pid == os.getpid():
        return True  # a previous life of this pod (pid 1 again) or a failed attempt of ours
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temporaries(
    directories: Iterable[str | os.PathLike[str]], *, stale_after: float
) -> list[Path]:
    """Remove the temporary product files in ``directories`` whose writer is gone.

    Parameters
    ----------
    directories : iterable of path
        Directories to look in (not recursive); missing ones are skipped.
    stale_after : float
        A temporary file not modified for this long is stale whoever wrote it [s].

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    removed: list[Path] = []
    now = time.time()
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = TEMP_PATTERN.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
                if _writer_gone(int(match["pid"]), match["host"]) or age > stale_after:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:
                continue  # renamed into place or removed meanwhile
    return removed
