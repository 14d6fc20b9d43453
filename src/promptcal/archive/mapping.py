"""The header mapping: how one instrument's FITS headers give what a night manifest needs.

Observatory archives write non-standard headers: MicroObservatory's ``DATE-OBS`` is
local time with a ``-0700`` suffix, its UT is in ``UT-OBS``, its pointing is ``RA``/
``DEC`` in degrees and its scale ``IM_SCALE``; DECam puts the WCS and the CCD number in
the extension. A :class:`HeaderMapping` (a JSON file in ``configs/archive/``, format in
``docs/archive.md``) lists, per quantity, the cards to try in order and constants that
stand in for missing cards; :func:`promptcal.archive.extract.extract` applies it to
one file's headers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptcal.core.errors import InvalidInputError

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


def companion_of(name: str, mapping: HeaderMapping) -> tuple[str, str] | None:
    """(role, image file name) when ``name`` is a weight or mask companion."""
    for companion in mapping.companions:
        if companion.pattern in name:
            return companion.role, name.replace(companion.pattern, companion.image)
    return None
