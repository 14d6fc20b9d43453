"""Where a worker reads snaps and writes products: URIs and product directories.

Snap URIs and ``--output`` are ``file://`` URIs or plain local paths; other schemes
are refused with :class:`~promptcal.core.errors.InvalidInputError` (this build has no
object-storage support). Product directories are deterministic, so a replayed
exposure overwrites its own products.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

from promptcal.core.errors import InvalidInputError


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
    """``<root>/<instrument>/<visit>/<detector>``: deterministic, so a replay overwrites."""
    return root / instrument / str(int(visit)) / str(int(detector))
