"""Archived nights: index a directory of an observatory's FITS files into a night manifest.

- :mod:`promptcal.archive.mapping`: the per-instrument header mapping (JSON in
  ``configs/archive/``) and what it extracts from one file's headers;
- :mod:`promptcal.archive.index`: scan a directory, group files into visits, and write
  the :class:`~promptcal.night.NightManifest` (and ``camera.json``) that
  ``promptcal replay`` reads.

See ``docs/archive.md``.
"""

from .index import IndexResult, index_archive
from .mapping import FrameInfo, HeaderMapping, SkipFile, load_mapping

__all__ = ["FrameInfo", "HeaderMapping", "IndexResult", "SkipFile", "index_archive", "load_mapping"]
