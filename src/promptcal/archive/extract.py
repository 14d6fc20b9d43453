"""Apply a header mapping to one file's headers: a :class:`FrameInfo`, or why not.

Cards are looked up in the image HDU first, then in the primary header (the INHERIT
convention). When the mapping's ``use_wcs`` is on and the image header has a
celestial WCS, the pointing hint is the sky position of the frame centre, and the
pixel scale and rotation come from the WCS; the header pointing cards are then
ignored. Without a WCS the pointing cards (degrees, or sexagesimal text with RA in
hours) and a pixel-scale card (or constant) are required.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcal.archive.mapping import HeaderMapping, TimeCard
from promptcal.io.fits_scan import ScannedFile, ScannedHDU

#: "hh:mm:ss.s" or "dd mm ss" with an optional sign.
_SEXAGESIMAL = re.compile(r"^\s*([+-]?)(\d+)[:\s]+(\d+)(?:[:\s]+(\d+(?:\.\d*)?))?\s*$")


class SkipFile(Exception):
    """A file that cannot be indexed; ``str()`` is the one-line reason."""


@dataclass
class FrameInfo:
    """What the index needs of one science file."""

    path: Path
    instrument: str
    mid_time: dt.datetime  # UTC, aware
    exposure_time: float  # [s]
    band: str
    detector: int
    visit: int | None
    ra: float  # pointing hint: the frame centre (WCS) or the header pointing [deg]
    dec: float  # [deg]
    pointing_source: str  # "WCS" or the card names
    pixel_scale: float  # ["/px]
    rotation: float  # sky position angle of +y, east of north [deg]
    width: int  # [px]
    height: int  # [px]
    saturation: float | None  # [count]
    has_wcs: bool

    @property
    def start_time(self) -> dt.datetime:
        """Shutter opening (UTC)."""
        return self.mid_time - dt.timedelta(seconds=self.exposure_time / 2.0)


class Cards:
    """Card lookup: the image HDU, then the primary header."""

    def __init__(self, scanned: ScannedFile, image: ScannedHDU) -> None:
        primary = scanned.hdus[0]
        self.layers = [image.cards] if image is primary else [image.cards, primary.cards]

    def get(self, *names: str) -> tuple[str | None, Any]:
        """(name, value) of the first card present with a non-empty value."""
        for name in names:
            for layer in self.layers:
                value = layer.get(name)
                if value is not None and value != "":
                    return name, value
        return None, None

    def number(self, *names: str) -> tuple[str | None, float | None]:
        """(name, value) of the first card with a finite numeric value (text too)."""
        for name in names:
            number = as_float(self.get(name)[1])
            if number is not None:
                return name, number
        return None, None


def as_float(value: Any) -> float | None:
    """A finite float from a number or numeric text, else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_angle(value: Any, hours: bool) -> float | None:
    """An angle [deg] from a number or sexagesimal text (hours when ``hours``)."""
    number = as_float(value)
    if number is None and isinstance(value, str):
        match = _SEXAGESIMAL.match(value)
        if match is None:
            return None
        sign, a, b, c = match.groups()
        number = int(a) + int(b) / 60.0 + float(c or 0.0) / 3600.0
        number = -number if sign == "-" else number
    if number is None:
        return None
    return number * (15.0 if hours else 1.0)


def parse_time(cards: Cards, spec: TimeCard) -> dt.datetime | None:
    """The instant of one time card (UTC, aware), or None when absent or unparseable."""
    value = cards.get(spec.card)[1]
    if value is None:
        return None
    if spec.format in ("mjd", "jd"):
        number = as_float(value)
        if number is None:
            return None
        days = number - (0.0 if spec.format == "mjd" else 2400000.5)
        return _to_utc(dt.datetime(1858, 11, 17) + dt.timedelta(days=days), spec.scale)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if spec.time_card and "T" not in text:
        clock = cards.get(spec.time_card)[1]
        if not isinstance(clock, str):
            return None
        text = f"{text}T{clock.strip()}"
    if "T" not in text and " " not in text:
        return None  # a date without a time of day cannot date an exposure
    try:
        moment = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is not None:  # e.g. MicroObservatory's local "-0700"
        return moment.astimezone(dt.UTC)
    return _to_utc(moment, spec.scale)


def _to_utc(naive: dt.datetime, scale: str) -> dt.datetime:
    if scale == "utc":
        return naive.replace(tzinfo=dt.UTC)
    from astropy.time import Time

    utc = Time(naive.isoformat(), format="isot", scale=scale).utc.to_datetime()
    return utc.replace(tzinfo=dt.UTC)


def wcs_pointing(image: ScannedHDU, shape: tuple[int, int]):
    """(ra, dec [deg], scale ["/px], rotation [deg]) of the frame centre; None: no WCS."""
    if not any(str(image.cards.get(f"CTYPE{i}", "")).strip() for i in (1, 2)):
        return None
    from astropy.io import fits

    from promptcal.io.frames import wcs_from_header
    from promptcal.pipeline.astrometry.tan_sip import wcs_pixel_to_icrs

    wcs = wcs_from_header(fits.Header.fromstring(image.raw.decode("ascii", "replace")), (0, 0))
    if wcs is None:
        return None
    cx, cy = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    ra, dec = wcs_pixel_to_icrs(wcs, [cx, cx + 1.0, cx], [cy, cy, cy + 1.0])
    cos_dec = math.cos(dec[0])
    # (east, north) of one pixel step along x and along y [rad].
    ex = ((ra[1] - ra[0] + math.pi) % (2 * math.pi) - math.pi) * cos_dec
    ey = ((ra[2] - ra[0] + math.pi) % (2 * math.pi) - math.pi) * cos_dec
    nx, ny = dec[1] - dec[0], dec[2] - dec[0]
    scale = math.degrees(math.sqrt(abs(ex * ny - ey * nx))) * 3600.0
    rotation = math.degrees(math.atan2(ey, ny))  # position angle of +y, east of north
    return math.degrees(ra[0]) % 360.0, math.degrees(dec[0]), scale, rotation


def _first_word(value: Any) -> str | None:
    words = str(value).split() if value is not None else []
    return words[0] if words else None


def _science_check(cards: Cards, mapping: HeaderMapping) -> None:
    name, value = cards.get(*mapping.science.cards)
    if name is None:
        return
    if str(value).strip().lower() not in {v.lower() for v in mapping.science.values}:
        raise SkipFile(f"{name}={str(value).strip()!r} is not a science exposure")


def _timing(cards: Cards, mapping: HeaderMapping) -> tuple[dt.datetime, float]:
    """(mid-exposure time, exposure time [s])."""
    exptime = mapping.exposure_time or cards.number(*mapping.exposure_time_cards)[1]
    if exptime is None or not exptime > 0:
        cards_tried = ", ".join(mapping.exposure_time_cards)
        raise SkipFile(f"no exposure time > 0 s in {cards_tried} (found {exptime})")
    for spec in mapping.time:
        instant = parse_time(cards, spec)
        if instant is not None:
            shift = {"start": 0.5, "middle": 0.0, "end": -0.5}[spec.marks] * exptime
            return instant + dt.timedelta(seconds=shift), float(exptime)
    tried = ", ".join(s.card for s in mapping.time)
    raise SkipFile(f"cannot date: no parseable time in {tried}")


def _header_pointing(cards: Cards, mapping: HeaderMapping):
    """(ra, dec, scale, rotation, source) from the pointing and scale cards."""
    for pair in mapping.pointing:
        ra_value, dec_value = cards.get(pair.ra)[1], cards.get(pair.dec)[1]
        hours = pair.ra_unit == "hour" or (isinstance(ra_value, str) and ":" in ra_value)
        ra, dec = parse_angle(ra_value, hours), parse_angle(dec_value, False)
        if ra is not None and dec is not None and -90 <= dec <= 90:
            break
    else:
        pairs = ", ".join(f"{p.ra}/{p.dec}" for p in mapping.pointing)
        raise SkipFile(f"no pointing: no celestial WCS and none of {pairs}")
    scale = mapping.pixel_scale or cards.number(*mapping.pixel_scale_cards)[1]
    if scale is None or not 0 < scale < 3600:
        raise SkipFile(
            f"no pixel scale: no WCS and none of {', '.join(mapping.pixel_scale_cards)} "
            f"in (0, 3600) arcsec/px (found {scale})"
        )
    rotation = cards.number(*mapping.rotation_cards)[1] or 0.0
    return ra, dec, scale, rotation, f"{pair.ra}/{pair.dec}"


def _whole(value: float | None) -> int | None:
    return int(value) if value is not None and value == int(value) and value >= 0 else None


def extract(path: Path, scanned: ScannedFile, mapping: HeaderMapping) -> FrameInfo:
    """Apply ``mapping`` to one file's headers.

    Raises
    ------
    SkipFile
        No image HDU, not a science exposure, or no time, exposure time, band,
        pointing or pixel scale.
    """
    image = scanned.image_hdu()
    if image is None:
        kinds = ", ".join(h.describe() for h in scanned.hdus)
        raise SkipFile(f"no 2-D image HDU ({kinds})")
    shape = image.image_shape
    assert shape is not None
    cards = Cards(scanned, image)
    _science_check(cards, mapping)
    mid, exptime = _timing(cards, mapping)
    band = mapping.band or _first_word(cards.get(*mapping.band_cards)[1])
    if not band:
        raise SkipFile(f"no band: none of {', '.join(mapping.band_cards)} and no constant band")
    wcs = wcs_pointing(image, shape) if mapping.use_wcs else None
    if wcs is not None:
        ra, dec, scale, rotation, source = (*wcs, "WCS")
    else:
        ra, dec, scale, rotation, source = _header_pointing(cards, mapping)
    instrument = mapping.instrument or _first_word(cards.get(*mapping.instrument_cards)[1])
    detector = mapping.detector
    if detector is None:
        detector = _whole(cards.number(*mapping.detector_cards)[1]) or 0
    return FrameInfo(
        path=path,
        instrument=safe_name(instrument or "archive"),
        mid_time=mid,
        exposure_time=exptime,
        band=band,
        detector=int(detector),
        visit=_whole(cards.number(*mapping.visit_cards)[1]),
        ra=float(ra) % 360.0,
        dec=float(dec),
        pointing_source=source,
        pixel_scale=float(scale),
        rotation=float(rotation),
        width=shape[0],
        height=shape[1],
        saturation=mapping.saturation or cards.number(*mapping.saturation_cards)[1],
        has_wcs=wcs is not None,
    )


def safe_name(text: str) -> str:
    """An instrument name usable as a directory name (product paths)."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", text.strip()).strip("-.")
    return name or "archive"
