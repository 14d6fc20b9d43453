"""Load reference stars over a sky region from a sharded refcat directory.

Shards are found with a HEALPix cone search around the region's bounding cap and
then filtered exactly on the sphere (see :mod:`promptcal.refcat.geometry`); shards
are checksum-verified when read and kept in a byte-bounded LRU cache so that the
streaming service can preload a detector's shards when a ``next-visit`` arrives.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u
from astropy.table import Table
from astropy.time import Time
from astropy_healpix import HEALPix, nside_to_pixel_resolution

from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.refcat.geometry import (
    angular_distance_deg,
    in_padded_polygon,
    polygon_cap,
    propagate_proper_motion,
)
from promptcal.refcat.manifest import Manifest, read_manifest, sha256_bytes

DEFAULT_CACHE_BYTES = 256 * 2**20
_MAS_PER_DEG = 3.6e6


class RefcatCoverageError(InvalidInputError):
    """The reference catalog has no shard overlapping the requested field."""


def _julian_year(epoch: Time | float) -> float:
    if isinstance(epoch, Time):
        return float(epoch.jyear)
    value = float(epoch)
    if not np.isfinite(value):
        raise InvalidInputError(f"epoch must be a finite Julian year, got {epoch!r}")
    return value


class RefcatLoader:
    """Reader of a reference-catalog directory written by :func:`build_refcat`.

    Parameters
    ----------
    directory : path
        Directory holding ``manifest.json`` and the shard files.
    cache_bytes : int
        Budget of the shard cache [bytes of Arrow table memory]; shards are evicted
        least-recently-used first. A shard larger than the whole budget is returned but
        not cached.
    """

    def __init__(self, directory: str | os.PathLike, *, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.directory = Path(directory)
        self.manifest: Manifest = read_manifest(self.directory)
        self.cache_bytes = int(cache_bytes)
        self._healpix = HEALPix(nside=self.manifest.nside, order="nested")
        self._existing = frozenset(self.manifest.pixels)
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._cached_bytes = 0
        self._hits = 0
        self._misses = 0
        # The streaming worker preloads from a background thread while it calibrates.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"RefcatLoader({str(self.directory)!r}, nside={self.manifest.nside}, "
            f"bands={sorted(self.manifest.bands)}, rows={self.manifest.total_rows})"
        )

    @property
    def bands(self) -> list[str]:
        """Names of the bands in the refcat."""
        return sorted(self.manifest.bands)

    @property
    def epoch(self) -> float | None:
        """Julian year of the catalog positions (None without proper motions)."""
        return self.manifest.epoch

    # ----------------------------------------------------------------- regions

    def _pixels_in_cap(self, ra_deg: float, dec_deg: float, radius_deg: float) -> list[int]:
        """Existing shard pixels that may overlap the cap (a superset; never misses one).

        ``cone_search_lonlat`` can miss pixels that only graze the cone (it samples pixel
        boundaries), so the search radius is padded by two pixel sizes and the
        candidates are then trimmed with each pixel's own bounding cap.
        """
        resolution = nside_to_pixel_resolution(self.manifest.nside).to_value(u.deg)
        search = min(radius_deg + 2.0 * resolution, 180.0)
        candidates = self._healpix.cone_search_lonlat(
            ra_deg * u.deg, dec_deg * u.deg, search * u.deg
        )
        candidates = np.array([p for p in candidates if int(p) in self._existing], dtype=np.int64)
        if candidates.size == 0:
            return []
        lon, lat = self._healpix.healpix_to_lonlat(candidates)
        blon, blat = self._healpix.boundaries_lonlat(candidates, step=8)
        c_ra, c_dec = lon.to_value(u.deg)[:, None], lat.to_value(u.deg)[:, None]
        pix_radius = angular_distance_deg(
            c_ra, c_dec, blon.to_value(u.deg), blat.to_value(u.deg)
        ).max(axis=1)
        # 2% + 1e-6 deg pad: the boundary is sampled, not continuous.
        pix_radius = pix_radius * 1.02 + 1e-6
        dist = angular_distance_deg(c_ra[:, 0], c_dec[:, 0], ra_deg, dec_deg)
        keep = dist <= radius_deg + pix_radius
        return sorted(int(p) for p in candidates[keep])

    def shards_for_region(self, ra_deg, dec_deg, margin_deg: float = 0.0) -> list[int]:
        """HEALPix pixels of existing shards overlapping the polygon padded by the margin.

        Parameters
        ----------
        ra_deg, dec_deg : array
            Polygon vertices [deg] (e.g. the four detector corners).
        margin_deg : float
            Padding [deg].

        Returns
        -------
        list of int
            Nested pixel indices, ascending; a superset of the exactly needed shards.
        """
        if not np.isfinite(margin_deg) or margin_deg < 0:
            raise InvalidInputError(f"margin must be a finite angle >= 0 deg, got {margin_deg}")
        ra_c, dec_c, radius = polygon_cap(ra_deg, dec_deg)
        return self._pixels_in_cap(ra_c, dec_c, radius + margin_deg)

    def covers(self, ra_vertices, dec_vertices) -> bool:
        """Whether any shard of the refcat overlaps the polygon."""
        return bool(self.shards_for_region(ra_vertices, dec_vertices, 0.0))

    def _coverage_error(self, ra_vertices, dec_vertices) -> RefcatCoverageError:
        ra_c, dec_c, _ = polygon_cap(ra_vertices, dec_vertices)
        pixels = self.manifest.pixels
        shown = ", ".join(str(p) for p in pixels[:10]) + (" ..." if len(pixels) > 10 else "")
        fp = self.manifest.footprint
        span = (
            f"RA [{fp['ra_min']:.4f}, {fp['ra_max']:.4f}], Dec [{fp['dec_min']:.4f}, "
            f"{fp['dec_max']:.4f}] deg"
            if fp
            else "unknown extent"
        )
        return RefcatCoverageError(
            f"reference catalog {self.directory} does not cover the field centred at "
            f"RA {ra_c:.4f}, Dec {dec_c:.4f} deg; it covers {len(pixels)} HEALPix pixels "
            f"(nside {self.manifest.nside}, nested: {shown}) spanning {span}"
        )

    def _select_bands(self, band: str | Iterable[str] | None) -> list[str]:
        if band is None:
            return self.bands
        wanted = [band] if isinstance(band, str) else list(band)
        missing = [b for b in wanted if b not in self.manifest.bands]
        if missing:
            raise InvalidInputError(
                f"band(s) {missing} not in reference catalog {self.directory}; "
                f"available bands: {self.bands}"
            )
        return wanted

    def load_region(
        self,
        ra_vertices,
        dec_vertices,
        *,
        margin_deg: float,
        epoch: Time | float | None = None,
        band: str | Iterable[str] | None = None,
        require_coverage: bool = True,
    ) -> Table:
        """Reference stars inside a polygon padded by a margin, at the requested epoch.

        Parameters
        ----------
        ra_vertices, dec_vertices : array
            Polygon vertices [deg], in order; edges are great-circle arcs.
        margin_deg : float
            Padding of the polygon [deg].
        epoch : astropy.time.Time or float, optional
            Epoch (Julian year if a float) to move the stars to; positions are left at
            the catalog epoch when None or when the refcat has no proper motions.
        band : str or list of str, optional
            Band(s) whose ``<band>_flux``/``<band>_fluxErr`` columns to return (all if None).
        require_coverage : bool
            Raise :class:`RefcatCoverageError` when no shard overlaps the polygon.

        Returns
        -------
        astropy.table.Table
            ``id``, ``ra``, ``dec`` [deg] (+ ``pm_ra``, ``pm_dec`` [mas/yr] when present)
            and the flux columns [nJy], sorted by id; ``meta`` records the epoch used.
        """
        bands = self._select_bands(band)
        dt = 0.0
        if epoch is not None and self.manifest.has_proper_motion:
            dt = _julian_year(epoch) - float(self.manifest.epoch)
        ra_c, dec_c, radius = polygon_cap(ra_vertices, dec_vertices)
        if not np.isfinite(margin_deg) or margin_deg < 0:
            raise InvalidInputError(f"margin must be a finite angle >= 0 deg, got {margin_deg}")
        if require_coverage and not self._pixels_in_cap(ra_c, dec_c, radius):
            raise self._coverage_error(ra_vertices, dec_vertices)
        # Stars may move into the region between the epochs: pad by the fastest motion.
        motion_pad = self.manifest.max_pm * abs(dt) / _MAS_PER_DEG
        pixels = self._pixels_in_cap(ra_c, dec_c, radius + margin_deg + motion_pad)

        names = ["id", "ra", "dec"]
        if self.manifest.has_proper_motion:
            names += ["pm_ra", "pm_dec"]
        for name in bands:
            info = self.manifest.bands[name]
            names += [info.flux_column, info.flux_err_column]
        tables = [self._get_shard(p).select(names) for p in pixels]
        merged = (
            pa.concat_tables(tables)
            if tables
            else pa.table({n: pa.array([], type=self._arrow_type(n)) for n in names})
        )
        # Cheap exact pre-cut on Dec (|dDec| <= distance) before the vector maths.
        reach = radius + margin_deg + motion_pad + 1e-6
        dec_all = merged.column("dec").to_numpy()
        band_rows = np.flatnonzero(np.abs(dec_all - dec_c) <= reach)
        data = {name: merged.column(name).to_numpy()[band_rows] for name in names}
        if dt and self.manifest.has_proper_motion:
            data["ra"], data["dec"] = propagate_proper_motion(
                data["ra"], data["dec"], data["pm_ra"], data["pm_dec"], dt
            )
        keep = in_padded_polygon(data["ra"], data["dec"], ra_vertices, dec_vertices, margin_deg)
        order = np.argsort(data["id"][keep], kind="stable")
        table = Table()
        for name in names:
            unit = self.manifest.columns.get(name) or None
            table[name] = (
                u.Quantity(data[name][keep][order], unit) if unit else data[name][keep][order]
            )
        table.meta.update(
            refcat=str(self.directory),
            epoch=float(self.manifest.epoch) + dt if self.manifest.epoch is not None else None,
            shards=pixels,
        )
        return table

    def _arrow_type(self, name: str) -> pa.DataType:
        return pa.int64() if name == "id" else pa.float64()

    # ------------------------------------------------------------------- cache

    def _read_shard(self, pixel: int) -> pa.Table:
        """Read and verify one shard file (no caching)."""
        info = self.manifest.shard(pixel)
        path = self.directory / info.file
        try:
            data = path.read_bytes()
        except OSError as exc:  # storage trouble, not the exposure's fault: retried upstream
            raise TransientError(f"reference catalog shard {path} unreadable: {exc}") from exc
        digest = sha256_bytes(data)
        if digest != info.sha256:
            raise InvalidInputError(
                f"reference catalog shard {path} is corrupt: sha256 {digest[:16]}… does not "
                f"match the manifest's {info.sha256[:16]}…"
            )
        # ParquetFile, not read_table: read_table goes through pyarrow.dataset, whose
        # import costs a new process ~0.2 s (pyarrow.compute) on its first exposure.
        table = pq.ParquetFile(io.BytesIO(data)).read()
        if table.num_rows != info.rows:
            raise InvalidInputError(
                f"reference catalog shard {path} has {table.num_rows} rows, manifest says "
                f"{info.rows}"
            )
        return table

    def _get_shard(self, pixel: int) -> pa.Table:
        with self._lock:
            table = self._cache.get(pixel)
            if table is not None:
                self._cache.move_to_end(pixel)
                self._hits += 1
                return table
            self._misses += 1
        table = self._read_shard(pixel)
        with self._lock:
            if pixel not in self._cache and table.nbytes <= self.cache_bytes:
                self._cache[pixel] = table
                self._cached_bytes += table.nbytes
                while self._cached_bytes > self.cache_bytes:
                    _, evicted = self._cache.popitem(last=False)
                    self._cached_bytes -= evicted.nbytes
        return table

    def load_shard(self, pixel: int) -> pa.Table:
        """The Arrow table of one shard (through the cache); KeyError if it does not exist."""
        if int(pixel) not in self._existing:
            raise KeyError(pixel)
        return self._get_shard(int(pixel))

    def preload(self, shard_ids: Iterable[int]) -> int:
        """Warm the cache with these shards (pixels without a shard are skipped).

        Returns
        -------
        int
            Number of shards that were read from disk (cache misses).
        """
        before = self._misses
        for pixel in shard_ids:
            if int(pixel) in self._existing:
                self._get_shard(int(pixel))
        return self._misses - before

    def cache_info(self) -> dict[str, int]:
        """Cache counters: ``hits``, ``misses``, ``bytes``, ``n_shards``, ``max_bytes``."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "bytes": self._cached_bytes,
                "n_shards": len(self._cache),
                "max_bytes": self.cache_bytes,
            }

    def clear_cache(self) -> None:
        """Drop every cached shard (counters are kept)."""
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0


def ref_cat_source_density(
    ra_deg, dec_deg, centre_ra: float, centre_dec: float, radius_deg: float
) -> float:
    """REF_CAT_SOURCE_DENSITY: reference sources per deg² within a radius of a centre.

    Parameters
    ----------
    ra_deg, dec_deg : array
        Reference positions [deg] (non-finite ones are not counted).
    centre_ra, centre_dec : float
        Centre [deg] (the bbox centre through the input WCS).
    radius_deg : float
        Radius r [deg] (half the bbox diagonal times the pixel scale).

    Returns
    -------
    float
        N(distance <= r) / (pi r²) [deg⁻²] (flat-sky area, as LSST).
    """
    if not np.isfinite(radius_deg) or radius_deg <= 0:
        raise InvalidInputError(f"density radius must be > 0 deg, got {radius_deg}")
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    dist = angular_distance_deg(ra, dec, centre_ra, centre_dec)
    count = int(np.count_nonzero(np.isfinite(dist) & (dist <= radius_deg)))
    return count / (np.pi * radius_deg**2)
