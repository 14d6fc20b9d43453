"""Atomic and durable file writes shared by every product writer.

A product is written to a temporary name in its directory and renamed into place, so
readers never see a partial file and a replay overwrites atomically; durability
(``fsync``) is a separate step, :func:`sync_paths`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same directory)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; products are meant to be shared
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
