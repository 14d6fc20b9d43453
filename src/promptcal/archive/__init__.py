"""Archived nights: index a directory of an observatory's FITS files into a night manifest.

- :mod:`promptcal.archive.mapping`: the per-instrument header mapping (JSON in
  ``configs/archive/``); :mod:`promptcal.archive.extract` applies it to one file;
- :mod:`promptcal.archive.index`: scan a directory, group files into visits, and write
  the :class:`~promptcal.night.plan.NightManifest` (and ``camera.json``) that
  ``promptcal replay`` reads.

See ``docs/archive.md``.
"""

from promptcal.archive.extract import FrameInfo, SkipFile
from promptcal.archive.index import IndexResult, index_archive
from promptcal.archive.mapping import HeaderMapping, load_mapping

__all__ = ["FrameInfo", "HeaderMapping", "IndexResult", "SkipFile", "index_archive", "load_mapping"]
