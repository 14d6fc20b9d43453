"""FITS header cards <-> visit info, detector, photometric calibration and metadata.

The card names are documented in ``docs/fits-layout.md``. Reading *consumes* the cards
it interprets (they are rebuilt from the model when writing); every other card of the
primary header is kept in ``Exposure.metadata`` so it survives a round trip.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation
from astropy.io import fits
from astropy.time import Time

from promptcal.core.exposure import Detector, PhotoCalib, VisitInfo

log = logging.getLogger(__name__)

#: Cards that describe the FITS structure, compression or checksums: never metadata.
_STRUCTURAL = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|GROUPS|TFIELDS|EXTNAME|EXTVER|"
    r"EXTLEVEL|BSCALE|BZERO|BLANK|INHERIT|CHECKSUM|DATASUM|COMMENT|HISTORY|"
    r"Z(IMAGE|BITPIX|NAXIS\d*|TILE\d*|CMPTYPE|NAME\d+|VAL\d+|QUANTIZ|DITHER0|SIMPLE|TENSION|"
    r"EXTEND|BLOCKED|PCOUNT|GCOUNT|HECKSUM|DATASUM)|MP_.*)$"
)
#: WCS, IRAF image-to-detector and alternate-WCS cards: rebuilt from ``Exposure.wcs``/``xy0``.
_WCS = re.compile(
    r"^(WCSAXES|WCSNAME|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CRDER\d|CSYER\d|"
    r"CNAME\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+|[AB]P?_ORDER|[AB]P?_\d+_\d+|[AB]P?_DMAX|"
    r"RADESYS|RADECSYS|EQUINOX|EPOCH|LONPOLE|LATPOLE|MJDREF[IF]?|DATEREF|WCSDIM|WAT\d_\d+|"
    r"LTV\d|LTM\d_\d|RESTFRQ|RESTFREQ|RESTWAV|SPECSYS|VELREF)[A-Z]?$"
)

#: Cards written by :func:`visit_cards`; metadata entries with these keys are ignored on write.
CANONICAL_KEYS = frozenset(
    {
        "EXPID", "EXPTIME", "DATE-AVG", "TIMESYS", "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z",
        "BORE-RA", "BORE-DEC", "ROTPA", "BAND", "DETECTOR", "DETNAME", "GAIN", "RDNOISE",
        "SATURATE", "PHOTOCAL", "PHOTOCAE", "BUNIT",
    }
)  # fmt: skip


def is_reserved(key: str) -> bool:
    """True for structural and WCS/origin cards, which never go into metadata."""
    key = key.upper()
    return key == "" or bool(_STRUCTURAL.match(key) or _WCS.match(key))


@dataclass
class Cards:
    """Header cards being interpreted; ``take`` marks a card as consumed."""

    values: dict[str, Any]
    used: set[str] = field(default_factory=set)

    @classmethod
    def from_headers(cls, *headers: fits.Header) -> Cards:
        """Merge headers (later ones win), keeping non-structural, non-WCS valued cards."""
        values: dict[str, Any] = {}
        for header in headers:
            for card in header.cards:
                key = card.keyword.upper()
                if is_reserved(key) or isinstance(card.value, fits.card.Undefined):
                    continue
                values[key] = card.value
        return cls(values)

    def get(self, *keys: str) -> tuple[str | None, Any]:
        """First present key among ``keys`` and its value, or ``(None, None)``."""
        for key in keys:
            if key in self.values:
                return key, self.values[key]
        return None, None

    def take(self, *keys: str) -> Any:
        """Value of the first present key (marked consumed), or ``None``."""
        key, value = self.get(*keys)
        if key is not None:
            self.used.add(key)
        return value

    def number(self, *keys: str) -> float | None:
        """Like :meth:`take` for the first key holding a finite number."""
        for key in keys:
            value = _as_float(self.values.get(key))
            if value is not None:
                self.used.add(key)
                return value
        return None

    def leftover(self) -> dict[str, Any]:
        """Cards not consumed: the exposure metadata."""
        return {k: v for k, v in self.values.items() if k not in self.used}


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _as_int(value: Any) -> int | None:
    number = _as_float(value)
    if number is None and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = float(value)
    if number is None or number != int(number):
        return None
    return int(number)


def _parse_isot(text: str, scale: str) -> Time | None:
    """Parse an ISO date; an explicit UTC offset ("-0700") is converted to UTC."""
    text = text.strip()
    try:
        return Time(text, format="isot", scale=scale)  # exact, to the last digit given
    except ValueError:
        pass
    try:
        moment = _dt.datetime.fromisoformat(text)  # date-only, "Z" or "+hhmm" offsets
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.UTC).replace(tzinfo=None)
        scale = "utc"
    return Time(moment.isoformat(), format="isot", scale=scale)


def parse_visit_info(cards: Cards) -> VisitInfo:
    """Build :class:`VisitInfo` from header cards (names in ``docs/fits-layout.md``)."""
    info = VisitInfo()
    for key in ("EXPID", "EXPNUM", "VISIT"):
        value = _as_int(cards.values.get(key))
        if value is not None:
            cards.used.add(key)
            info.exposure_id = value
            break
    exptime = cards.number("EXPTIME")
    info.exposure_time = exptime if exptime is not None else 0.0
    info.date = _parse_date(cards, info.exposure_time)
    info.observatory = _parse_observatory(cards)
    bore_ra = cards.number("BORE-RA")
    bore_dec = cards.number("BORE-DEC")
    if bore_ra is None or bore_dec is None:
        # RA/DEC only count as a boresight when they are plain degrees (not sexagesimal).
        ra, dec = _as_float(cards.values.get("RA")), _as_float(cards.values.get("DEC"))
        if ra is not None and dec is not None:
            cards.used.update({"RA", "DEC"})
            bore_ra, bore_dec = ra, dec
    if bore_ra is not None and bore_dec is not None:
        info.boresight_ra_dec = (bore_ra, bore_dec)
    info.rotation_angle = cards.number("ROTPA", "BORE-ROTANG")
    return info


def _parse_date(cards: Cards, exposure_time: float) -> Time | None:
    timesys = cards.take("TIMESYS")
    scale = str(timesys).strip().lower() if timesys else "utc"
    if scale not in Time.SCALES:
        log.warning("unknown TIMESYS %r; assuming UTC", timesys)
        scale = "utc"
    half = _dt.timedelta(seconds=exposure_time / 2.0)
    avg = cards.values.get("DATE-AVG")
    if isinstance(avg, str) and (date := _parse_isot(avg, scale)) is not None:
        cards.used.add("DATE-AVG")
        return date
    start = cards.values.get("DATE-OBS")
    if isinstance(start, str):
        time_obs = cards.values.get("TIME-OBS")
        if "T" not in start and isinstance(time_obs, str):  # old split date/time cards
            start = f"{start.strip()}T{time_obs.strip()}"
        if (date := _parse_isot(start, scale)) is not None:
            cards.used.add("DATE-OBS")
            return date + half
    mjd = cards.number("MJD-OBS")
    if mjd is not None:
        return Time(mjd, format="mjd", scale=scale) + half
    return None


def _parse_observatory(cards: Cards) -> EarthLocation | None:
    xyz = [_as_float(cards.values.get(f"OBSGEO-{c}")) for c in "XYZ"]
    if all(v is not None for v in xyz):
        cards.used.update({"OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z"})
        return EarthLocation.from_geocentric(*xyz, unit=u.m)
    lat, lon = _as_float(cards.values.get("OBS-LAT")), _as_float(cards.values.get("OBS-LONG"))
    if lat is None or lon is None:
        return None
    cards.used.update({"OBS-LAT", "OBS-LONG"})
    height = cards.number("OBS-ELEV") or 0.0
    return EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, height * u.m)


def parse_band(cards: Cards) -> str | None:
    """``BAND``, else the first word of ``FILTER`` (which stays in the metadata)."""
    band = cards.take("BAND")
    if isinstance(band, str) and band.strip():
        return band.strip()
    filt = cards.values.get("FILTER")
    if isinstance(filt, str) and filt.split():
        return filt.split()[0]
    return None


def _amp_mean(cards: Cards, stem: str) -> float | None:
    """Mean of per-amplifier cards ``<stem>A``, ``<stem>B`` … (DECam); not consumed."""
    values = [_as_float(cards.values.get(f"{stem}{amp}")) for amp in "ABCD"]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def parse_detector(cards: Cards) -> tuple[Detector, dict[str, bool]]:
    """Build a :class:`Detector`; the flags say which of gain/read noise/saturation were found."""
    det = Detector()
    key, value = cards.get("DETECTOR", "CCDNUM")
    as_int = _as_int(value)
    name_from_detector = None
    if as_int is None and key == "DETECTOR":
        # DECam-style: DETECTOR is a serial string; the number is in CCDNUM.
        name_from_detector = str(value).strip()
        as_int = _as_int(cards.values.get("CCDNUM"))
        key = "CCDNUM" if as_int is not None else None
    if key is not None and as_int is not None:
        cards.used.add(key)
        det.id = as_int
    name = cards.take("DETNAME", "CCDNAME")
    if isinstance(name, str) and name.strip():
        det.name = name.strip()
    elif name_from_detector:
        cards.used.add("DETECTOR")
        det.name = name_from_detector
    found = {}
    gain = cards.number("GAIN")
    gain = gain if gain is not None else _amp_mean(cards, "GAIN")
    found["gain"] = gain is not None and gain > 0
    if found["gain"]:
        det.gain = gain
    read_noise = cards.number("RDNOISE", "READNOIS")
    read_noise = read_noise if read_noise is not None else _amp_mean(cards, "RDNOISE")
    found["read_noise"] = read_noise is not None and read_noise >= 0
    if found["read_noise"]:
        det.read_noise = read_noise
    saturation = cards.number("SATURATE")
    found["saturation"] = saturation is not None
    if saturation is not None:
        det.saturation = saturation
    return det, found


def parse_photo_calib(cards: Cards) -> PhotoCalib | None:
    mean = cards.number("PHOTOCAL")
    if mean is None:
        return None
    error = cards.number("PHOTOCAE")
    return PhotoCalib(mean=mean, error=error if error is not None else 0.0)


def clean_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Metadata dict from leftover cards; ``PSF_FWHM`` [px] is coerced to float."""
    metadata = {k: _plain(v) for k, v in values.items()}
    if "PSF_FWHM" in metadata:
        fwhm = _as_float(metadata["PSF_FWHM"])
        if fwhm is None:
            log.warning("ignoring non-numeric PSF_FWHM card %r", metadata["PSF_FWHM"])
            del metadata["PSF_FWHM"]
        else:
            metadata["PSF_FWHM"] = fwhm
    return metadata


def _plain(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def set_card(header: fits.Header, key: str, value: Any, comment: str | None = None) -> bool:
    """Set one card, using HIERARCH for long or non-standard keys; False if unwritable."""
    key = key.upper()
    value = _plain(value)
    if not isinstance(value, str | bool | int | float):
        log.warning("metadata %s=%r is not a FITS scalar; not written", key, value)
        return False
    if isinstance(value, float) and not math.isfinite(value):
        log.warning("metadata %s=%r is not finite; not written", key, value)
        return False
    name = key if re.fullmatch(r"[A-Z0-9_-]{1,8}", key) else f"HIERARCH {key}"
    try:
        header[name] = (value, comment) if comment else value
    except ValueError as exc:
        log.warning("card %s=%r cannot be written (%s); skipped", key, value, exc)
        return False
    return True


def visit_cards(header: fits.Header, info: VisitInfo, band: str | None) -> None:
    """Write the visit-info cards (canonical names) into ``header``."""
    set_card(header, "EXPID", int(info.exposure_id), "exposure id")
    set_card(header, "EXPTIME", float(info.exposure_time), "[s] exposure time")
    if info.date is not None:
        date = info.date.copy()
        date.precision = 9
        set_card(header, "DATE-AVG", date.isot, "mid-exposure date")
        set_card(header, "TIMESYS", date.scale.upper(), "time scale of DATE-AVG")
    if info.observatory is not None:
        for axis, value in zip("XYZ", info.observatory.geocentric, strict=True):
            set_card(header, f"OBSGEO-{axis}", float(value.to_value(u.m)), "[m] geocentric")
    if info.boresight_ra_dec is not None:
        set_card(header, "BORE-RA", float(info.boresight_ra_dec[0]), "[deg] boresight RA")
        set_card(header, "BORE-DEC", float(info.boresight_ra_dec[1]), "[deg] boresight Dec")
    if info.rotation_angle is not None:
        set_card(header, "ROTPA", float(info.rotation_angle), "[deg] rotation angle")
    if band:
        set_card(header, "BAND", band, "physical filter band")


def detector_cards(header: fits.Header, det: Detector) -> None:
    """Write the detector cards into ``header``."""
    set_card(header, "DETECTOR", int(det.id), "detector number")
    if det.name:
        set_card(header, "DETNAME", det.name, "detector name")
    set_card(header, "GAIN", float(det.gain), "[e-/count] gain")
    set_card(header, "RDNOISE", float(det.read_noise), "[e-] read noise")
    if math.isfinite(det.saturation):
        set_card(header, "SATURATE", float(det.saturation), "[count] saturation level")


def photo_calib_cards(header: fits.Header, calib: PhotoCalib) -> None:
    set_card(header, "PHOTOCAL", float(calib.mean), "[nJy/count] photometric calibration")
    set_card(header, "PHOTOCAE", float(calib.error), "[nJy/count] error of PHOTOCAL")
