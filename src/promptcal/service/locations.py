"""Where a worker reads snaps and writes products: URIs and product directories.

Snap URIs and ``--output`` are ``file://`` URIs or plain local paths; other schemes
are refused with :class:`~promptcal.core.errors.InvalidInputError` (this build has no
object-storage support). Product directories are deterministic, so a replayed
exposure overwrites its own products.

Confinement (issue 15): a product directory is built from message fields, so
:func:`product_dir` checks each component (the ``instrument`` must be one plain
directory name, ids are bounded integers) and that the directory, symlinks resolved,
stays under the output root; :func:`confine` does the same for a snap file and the
configured input roots (:mod:`promptcal.service.inputs`). A violation is an
:class:`~promptcal.core.errors.InvalidInputError` (a dead letter), never a write
elsewhere and never a retried ``OSError``.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from promptcal.core.errors import InvalidInputError
from promptcal.service.fields import INSTRUMENT_PATTERN, MAX_DETECTOR, MAX_VISIT


def output_root(uri: str) -> Path:
    """The local directory of ``--output`` (a path or a ``file://`` URI)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise InvalidInputError(
            f"output {uri!r}: only local directories and file:// URIs are supported"
        )
    return Path(uri)


def uri_to_path(uri: str) -> Path:
    """The local file of a snap URI (``file://...`` or a plain path).

    Raises
    ------
    InvalidInputError
        Another scheme (``s3://`` needs object-storage support this build lacks).
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidInputError(f"snap URI {uri!r}: remote file:// hosts are not supported")
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise InvalidInputError(f"snap URI {uri!r}: scheme {parsed.scheme!r} is not supported")
    return Path(uri)


def product_dir(root: Path, instrument: str, visit: int, detector: int) -> Path:
    """``<root>/<instrument>/<visit>/<detector>``: deterministic, so a replay overwrites.

    Raises
    ------
    InvalidInputError
        The instrument is not one plain directory name, an id is out of range, or the
        directory (symlinks resolved) would not be under ``root``.
    """
    if not isinstance(instrument, str) or not re.fullmatch(INSTRUMENT_PATTERN, instrument):
        raise InvalidInputError(f"instrument {instrument!r} is not a plain directory name")
    if not 0 <= int(visit) <= MAX_VISIT or not 0 <= int(detector) <= MAX_DETECTOR:
        raise InvalidInputError(f"visit {visit} / detector {detector} out of range")
    path = Path(root) / instrument / str(int(visit)) / str(int(detector))
    confine(path, [root], what="product directory")
    return path


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``root`` or below it (both as given: resolve them first)."""
    path, root = os.fspath(path), os.fspath(root).rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


def confine(
    path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]], *, what: str
) -> Path:
    """``path`` with symlinks resolved, checked to lie under one of ``roots``.

    Parts that do not exist yet are taken as they are (``os.path.realpath``).

    Raises
    ------
    InvalidInputError
        It resolves outside every root (``..``, an absolute path, a symlink out).
    """
    try:
        real = os.path.realpath(path)
        real_roots = [os.path.realpath(r) for r in roots]
    except (OSError, ValueError) as exc:  # ValueError: NUL byte
        raise InvalidInputError(f"{what} {os.fspath(path)!r}: {exc}") from exc
    if not any(is_within(real, r) for r in real_roots):
        raise InvalidInputError(
            f"{what} {os.fspath(path)!r} resolves to {real}, outside {', '.join(real_roots)}"
        )
    return Path(real)


def recent_product_dirs(root: Path, window: float) -> list[Path]:
    """Product directories under visit directories modified within ``window`` seconds.

    A visit directory's mtime changes when a detector directory is created in it, so this
    finds the exposures written recently (where a killed worker may have left temporary
    files) without walking years of products.
    """
    horizon = time.time() - window
    found: list[Path] = []
    for instrument in _subdirs(root):
        for visit in _subdirs(instrument):
            try:
                if visit.stat().st_mtime < horizon:
                    continue
            except FileNotFoundError:
                continue
            found.extend(_subdirs(visit))
    return found


def product_dir_parents(directory: Path, root: Path) -> list[Path]:
    """The directories from ``directory``'s parent up to ``root`` (inclusive): where the
    entries of newly created product directories live."""
    parents, current = [], Path(directory).parent
    while is_within(current, root):
        parents.append(current)
        if current == Path(root):
            break
        current = current.parent
    return parents


def _subdirs(directory: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
