"""The header mapping: how one instrument's FITS headers give what a night manifest needs.

Observatory archives write non-standard headers: MicroObservatory's ``DATE-OBS`` is
local time with a ``-0700`` suffix, its UT is in ``UT-OBS``, its pointing is ``RA``/
``DEC`` in degrees and its scale ``IM_SCALE``; DECam puts the WCS and the CCD number in
the extension. A :class:`HeaderMapping` (a JSON file in ``configs/archive/``, format in
``docs/archive.md``) lists, per quantity, the cards to try in order and constants that
stand in for missing cards. :func:`extract` applies it to one scanned file and returns
a :class:`FrameInfo`, or raises :class:`SkipFile` with a one-line reason.

Cards are looked up in the image HDU first, then in the primary header (the INHERIT
convention). When ``use_wcs`` is on and the image header has a celestial WCS, the
pointing hint is the sky position of the frame centre, the pixel scale and rotation
come from the WCS, and the header pointing cards are ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InvalidInputError
from ..io.fits_scan import ScannedFile, ScannedHDU

#: Where the mappings shipped with promptcal live (``configs/archive/`` of the repo).
MAPPING_DIR = Path(__file__).resolve().parents[3] / "configs" / "archive"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeCard(_Model):
    """One card that dates the exposure."""

    card: str = Field(description="Card name, e.g. 'DATE-OBS'.")
    format: Literal["isot", "mjd", "jd"] = Field(
        "isot", description="ISO 8601 (a UTC offset such as '-0700' is honoured), MJD or JD."
    )
    marks: Literal["start", "middle", "end"] = Field(
        "start", description="Which instant of the exposure the card gives."
    )
    scale: Literal["utc", "tai", "tt"] = Field(
        "utc", description="Time scale of a value without a UTC offset."
    )
    time_card: str | None = Field(
        None, description="Card with the time of day when the card holds only a date."
    )


class PointingCards(_Model):
    """A pair of cards with the pointing (used only for files without a WCS)."""

    ra: str = Field(description="Right-ascension card.")
    dec: str = Field(description="Declination card.")
    ra_unit: Literal["deg", "hour"] = Field(
        "deg", description="Unit of a numeric RA; sexagesimal text ('hh:mm:ss') is hours."
    )


class Companion(_Model):
    """A file that belongs to an image: its inverse-variance weight or its mask."""

    role: Literal["weight", "mask"] = Field(description="What the companion file holds.")
    pattern: str = Field(min_length=1, description="Substring of the companion's file name.")
    image: str = Field(description="Replacing the pattern with this gives the image's name.")


class ScienceFilter(_Model):
    """Which files are science exposures (the others are listed and skipped)."""

    cards: tuple[str, ...] = Field(("OBSTYPE", "IMAGETYP"), description="Cards to check.")
    values: tuple[str, ...] = Field(
        ("object", "science", "light", "light frame", "sky"),
        description="Accepted values (case-insensitive); a file without the cards passes.",
    )


class HeaderMapping(_Model):
    """Per-instrument header mapping; the defaults read standard cards."""

    format_version: Literal[1] = Field(1, description="Mapping format version.")
    name: str = Field("default", min_length=1, description="Mapping name.")
    description: str = Field("", description="What the mapping is for.")
    instrument: str | None = Field(None, description="Instrument name; None: from the cards.")
    instrument_cards: tuple[str, ...] = ("INSTRUME", "TELESCOP")
    time: tuple[TimeCard, ...] = Field(
        (
            TimeCard(card="DATE-AVG", marks="middle"),
            TimeCard(card="DATE-OBS", time_card="TIME-OBS"),
            TimeCard(card="DATE-BEG"),
            TimeCard(card="MJD-AVG", format="mjd", marks="middle"),
            TimeCard(card="MJD-OBS", format="mjd"),
        ),
        min_length=1,
        description="Cards that date the exposure, tried in order.",
    )
    exposure_time: float | None = Field(None, gt=0, description="Constant exposure time [s].")
    exposure_time_cards: tuple[str, ...] = ("EXPTIME", "EXPOSURE", "ITIME", "EXPTIM")
    band: str | None = Field(None, description="Constant band; None: from the cards.")
    band_cards: tuple[str, ...] = Field(
        ("BAND", "FILTER", "FILTNAME"), description="First word of the first card present."
    )
    detector: int | None = Field(None, ge=0, description="Constant detector id.")
    detector_cards: tuple[str, ...] = Field(
        ("CCDNUM", "DETID"), description="Integer detector id; 0 when none is present."
    )
    visit_cards: tuple[str, ...] = Field(
        ("EXPNUM", "EXPID", "VISIT"),
        description="Integer exposure id; None: YYYYMMDD + seconds since the day_obs noon.",
    )
    use_wcs: bool = Field(True, description="Take pointing, scale and rotation from a WCS.")
    pointing: tuple[PointingCards, ...] = (
        PointingCards(ra="RA", dec="DEC"),
        PointingCards(ra="OBJCTRA", dec="OBJCTDEC"),
        PointingCards(ra="TELRA", dec="TELDEC"),
    )
    pixel_scale: float | None = Field(None, gt=0, description='Constant pixel scale ["/px].')
    pixel_scale_cards: tuple[str, ...] = ("PIXSCALE", "IM_SCALE", "SECPIX", "PIXSCAL1", "SCALE")
    rotation_cards: tuple[str, ...] = Field(
        ("ROTPA",), description="Sky position angle of +y [deg]; 0 when none is present."
    )
    saturation: float | None = Field(None, gt=0, description="Saturation level [count].")
    saturation_cards: tuple[str, ...] = ("SATURATE",)
    science: ScienceFilter = ScienceFilter()
    companions: tuple[Companion, ...] = Field(
        (
            # NOIRLab Community Pipeline names: _ooi_ image, _oow_ weight, _ood_ DQ mask.
            Companion(role="weight", pattern="_oow_", image="_ooi_"),
            Companion(role="mask", pattern="_ood_", image="_ooi_"),
        ),
        description="Weight and mask files, attached to their image.",
    )
    readout_time: float = Field(
        0.0, ge=0, description="Shutter close to the file in storage, for the replay [s]."
    )
    visit_tolerance: float = Field(
        1.0, ge=0, description="Files starting this close together are one visit [s]."
    )


def load_mapping(name_or_path: str | os.PathLike[str] | None) -> HeaderMapping:
    """A mapping: ``None`` (the default), a JSON file, or a name in ``configs/archive/``.

    Raises
    ------
    InvalidInputError
        Unknown name, unreadable file, or a file that does not follow the format.
    """
    if name_or_path is None or str(name_or_path) == "default":
        return HeaderMapping()
    path = Path(name_or_path)
    if not path.is_file() and (MAPPING_DIR / f"{name_or_path}.json").is_file():
        path = MAPPING_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in MAPPING_DIR.glob("*.json"))
        raise InvalidInputError(
            f"header mapping {str(name_or_path)!r} is neither a file nor one of {known}"
        )
    try:
        return HeaderMapping.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        text = " ".join(str(exc).split())
        raise InvalidInputError(f"header mapping {path}: {text}") from exc


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
    rotation: float  # sky position angle of +y [deg]
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
        """(name, value) of the first card present with a value."""
        for name in names:
            for layer in self.layers:
                value = layer.get(name)
                if value is not None and value != "":
                    return name, value
        return None, None

    def number(self, *names: str) -> tuple[str | None, float | None]:
        """(name, value) of the first card with a finite numeric value (text too)."""
        for name in names:
            _, value = self.get(name)
            number = _as_float(value)
            if number is not None:
                return name, number
        return None, None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_SEXAGESIMAL = re.compile(r"^\s*([+-]?)(\d+)[:\s]+(\d+)(?:[:\s]+(\d+(?:\.\d*)?))?\s*$")


def parse_angle(value: Any, hours: bool) -> float | None:
    """An angle [deg] from a number or sexagesimal text (hours when ``hours``)."""
    number = _as_float(value)
    if number is None and isinstance(value, str):
        match = _SEXAGESIMAL.match(value)
        if match is None:
            return None
        sign, a, b, c = match.groups()
        number = int(a) + int(b) / 60.0 + float(c or 0.0) / 3600.0
        number = -number if sign == "-" else number
        return number * (15.0 if hours else 1.0)
    if number is None:
        return None
    return number * (15.0 if hours else 1.0)


def parse_time(cards: Cards, spec: TimeCard) -> dt.datetime | None:
    """The instant of one time card (UTC, aware), or None when absent/unparseable."""
    _, value = cards.get(spec.card)
    if value is None:
        return None
    if spec.format in ("mjd", "jd"):
        number = _as_float(value)
        if number is None:
            return None
        days = number - (0.0 if spec.format == "mjd" else 2400000.5)
        naive = dt.datetime(1858, 11, 17) + dt.timedelta(days=days)
        return _to_utc(naive, spec.scale)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if spec.time_card and "T" not in text:
        _, clock = cards.get(spec.time_card)
        if not isinstance(clock, str):
            return None
        text = f"{text}T{clock.strip()}"
    if "T" not in text and " " not in text:
        return None  # a date without a time of day cannot date an exposure
    try:
        moment = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return moment.astimezone(dt.UTC)
    return _to_utc(moment, spec.scale)


def _to_utc(naive: dt.datetime, scale: str) -> dt.datetime:
    if scale == "utc":
        return naive.replace(tzinfo=dt.UTC)
    from astropy.time import Time

    utc = Time(naive.isoformat(), format="isot", scale=scale).utc.to_datetime()
    return utc.replace(tzinfo=dt.UTC)


def _wcs_pointing(scanned: ScannedFile, image: ScannedHDU, shape: tuple[int, int]):
    """(ra, dec, scale ["/px], rotation [deg]) of the frame centre, or None (no WCS)."""
    if not any(str(image.cards.get(f"CTYPE{i}", "")).strip() for i in (1, 2)):
        return None
    from astropy.io import fits

    from ..astrometry_fit import wcs_pixel_to_icrs
    from ..io.frames import wcs_from_header

    header = fits.Header.fromstring(image.raw.decode("ascii", errors="replace"))
    wcs = wcs_from_header(header, (0, 0))
    if wcs is None:
        return None
    cx, cy = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    ra, dec = wcs_pixel_to_icrs(wcs, [cx, cx + 1.0, cx], [cy, cy, cy + 1.0])
    ra, dec = map(lambda a: [float(v) for v in a], (ra, dec))
    cos_dec = math.cos(dec[0])

    def step(i: int) -> tuple[float, float]:  # (east, north) of one pixel step [rad]
        d_ra = (ra[i] - ra[0] + math.pi) % (2 * math.pi) - math.pi
        return d_ra * cos_dec, dec[i] - dec[0]

    (ex, nx), (ey, ny) = step(1), step(2)
    scale = math.sqrt(abs(ex * ny - ey * nx)) * 180.0 / math.pi * 3600.0
    rotation = math.degrees(math.atan2(ey, ny))  # position angle of +y, east of north
    return math.degrees(ra[0]) % 360.0, math.degrees(dec[0]), scale, rotation


def _science_check(cards: Cards, mapping: HeaderMapping) -> None:
    name, value = cards.get(*mapping.science.cards)
    if name is None:
        return
    accepted = {v.lower() for v in mapping.science.values}
    if str(value).strip().lower() not in accepted:
        raise SkipFile(f"{name}={str(value).strip()!r} is not a science exposure")


def _first_word(value: Any) -> str | None:
    words = str(value).split() if value is not None else []
    return words[0] if words else None


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
    mid = None
    exptime = mapping.exposure_time or cards.number(*mapping.exposure_time_cards)[1]
    if exptime is None or not exptime > 0:
        raise SkipFile(
            f"no exposure time > 0 s in {', '.join(mapping.exposure_time_cards)} (found {exptime})"
        )
    for spec in mapping.time:
        instant = parse_time(cards, spec)
        if instant is not None:
            shift = {"start": 0.5, "middle": 0.0, "end": -0.5}[spec.marks] * exptime
            mid = instant + dt.timedelta(seconds=shift)
            break
    if mid is None:
        tried = ", ".join(s.card for s in mapping.time)
        raise SkipFile(f"cannot date: no parseable time in {tried}")
    band = mapping.band or _first_word(cards.get(*mapping.band_cards)[1])
    if not band:
        raise SkipFile(f"no band: none of {', '.join(mapping.band_cards)} and no constant band")
    instrument = mapping.instrument or _first_word(cards.get(*mapping.instrument_cards)[1])
    wcs = _wcs_pointing(scanned, image, shape) if mapping.use_wcs else None
    if wcs is not None:
        ra, dec, scale, rotation = wcs
        source = "WCS"
    else:
        ra = dec = None
        source = ""
        for pair in mapping.pointing:
            _, ra_value = cards.get(pair.ra)
            _, dec_value = cards.get(pair.dec)
            hours = pair.ra_unit == "hour" or (isinstance(ra_value, str) and ":" in ra_value)
            ra, dec = parse_angle(ra_value, hours), parse_angle(dec_value, False)
            if ra is not None and dec is not None and -90 <= dec <= 90:
                source = f"{pair.ra}/{pair.dec}"
                break
            ra = dec = None
        if ra is None or dec is None:
            pairs = ", ".join(f"{p.ra}/{p.dec}" for p in mapping.pointing)
            raise SkipFile(f"no pointing: no celestial WCS and none of {pairs}")
        scale = mapping.pixel_scale or cards.number(*mapping.pixel_scale_cards)[1]
        if scale is None or not 0 < scale < 3600:
            raise SkipFile(
                f"no pixel scale: no WCS and none of {', '.join(mapping.pixel_scale_cards)} "
                f"in (0, 3600) arcsec/px (found {scale})"
            )
        rotation = cards.number(*mapping.rotation_cards)[1] or 0.0
    visit = cards.number(*mapping.visit_cards)[1]
    detector = mapping.detector
    if detector is None:
        number = cards.number(*mapping.detector_cards)[1]
        detector = int(number) if number is not None and number == int(number) >= 0 else 0
    saturation = mapping.saturation or cards.number(*mapping.saturation_cards)[1]
    return FrameInfo(
        path=path,
        instrument=_safe_name(instrument or "archive"),
        mid_time=mid,
        exposure_time=float(exptime),
        band=band,
        detector=int(detector),
        visit=int(visit) if visit is not None and visit == int(visit) >= 0 else None,
        ra=float(ra) % 360.0,
        dec=float(dec),
        pointing_source=source,
        pixel_scale=float(scale),
        rotation=float(rotation),
        width=shape[0],
        height=shape[1],
        saturation=saturation,
        has_wcs=wcs is not None,
    )


def _safe_name(text: str) -> str:
    """An instrument name usable as a directory name (product paths)."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", text.strip()).strip("-.")
    return name or "archive"


def companion_of(name: str, mapping: HeaderMapping) -> tuple[str, str] | None:
    """(role, image file name) when ``name`` is a weight or mask companion."""
    for companion in mapping.companions:
        if companion.pattern in name:
            return companion.role, name.replace(companion.pattern, companion.image)
    return None
