"""Read only the headers of a FITS file: fast, and strict about damage.

An archive index looks at thousands of files and needs a few cards of each.
:func:`scan_fits` reads the 2880-byte header blocks of every HDU, seeks over the data
(whose size follows from ``BITPIX``, ``NAXISn``, ``PCOUNT`` and ``GCOUNT``), and
checks that the file is long enough for every HDU it declares. Nothing else is
decoded, so a warm file costs a few hundred microseconds (astropy's ``getheader``
builds a full ``Header`` object per HDU and is several times slower).

Card values follow the FITS standard (4.0, §4.2): quoted strings (``''`` is a quote,
trailing blanks dropped, ``CONTINUE`` long strings joined), ``T``/``F``, integers,
reals (``D`` exponents too); ``HIERARCH`` keywords keep their dotted-free long name.
Anything that is not FITS, or is cut short, raises
:class:`~promptcal.core.errors.InvalidInputError` with a one-line reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from promptcal.core.errors import InvalidInputError

BLOCK = 2880
CARD = 80
#: Header blocks read at most per HDU (a 1000-card header is 28 blocks).
MAX_HEADER_BLOCKS = 1000


@dataclass
class ScannedHDU:
    """One HDU: its cards and where its data lie.

    Attributes
    ----------
    index : int
        Position in the file (0 = primary).
    cards : dict
        Keyword -> value (``None`` for a keyword without value); the first occurrence
        of a keyword wins, as in astropy.
    raw : bytes
        The header blocks as read (for building an astropy ``Header`` when needed).
    data_offset, data_size : int
        Byte offset and size of the data (without the padding) [bytes].
    """

    index: int
    cards: dict[str, Any]
    raw: bytes
    data_offset: int
    data_size: int

    @property
    def xtension(self) -> str:
        """``PRIMARY`` or the extension type (``IMAGE``, ``BINTABLE``, ``TABLE`` …)."""
        if self.index == 0:
            return "PRIMARY"
        return str(self.cards.get("XTENSION", "?")).strip().upper()

    @property
    def compressed(self) -> bool:
        """A tile-compressed image (a ``BINTABLE`` with ``ZIMAGE = T``)."""
        return self.xtension == "BINTABLE" and self.cards.get("ZIMAGE") is True

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(width, height) of a 2-D image HDU (compressed or not), else ``None``."""
        prefix = "Z" if self.compressed else ""
        if not self.compressed and self.xtension not in ("PRIMARY", "IMAGE"):
            return None
        if self.cards.get(f"{prefix}NAXIS") != 2:
            return None
        width, height = self.cards.get(f"{prefix}NAXIS1"), self.cards.get(f"{prefix}NAXIS2")
        if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 or height <= 0:
            return None
        return width, height

    def describe(self) -> str:
        """A few words for messages, e.g. ``"HDU 1 (BINTABLE, 884 rows)"``."""
        if self.image_shape is not None:
            w, h = self.image_shape
            kind = "compressed image" if self.compressed else self.xtension.lower() + " image"
            return f"HDU {self.index} ({kind} {w}x{h})"
        naxis = self.cards.get("NAXIS", 0)
        if self.xtension in ("BINTABLE", "TABLE"):
            return f"HDU {self.index} ({self.xtension} table, {self.cards.get('NAXIS2', 0)} rows)"
        dims = "x".join(str(self.cards.get(f"NAXIS{i}", "?")) for i in range(1, naxis + 1))
        return f"HDU {self.index} ({self.xtension}, NAXIS={naxis}{', ' + dims if dims else ''})"


@dataclass
class ScannedFile:
    """Every HDU header of one FITS file."""

    path: str
    size: int
    hdus: list[ScannedHDU] = field(default_factory=list)

    def image_hdu(self) -> ScannedHDU | None:
        """The first HDU with 2-D image data (primary, IMAGE or compressed), if any."""
        for hdu in self.hdus:
            if hdu.image_shape is not None:
                return hdu
        return None


def parse_value(text: str) -> Any:
    """The value of a card's value field (after ``"= "``); ``None`` when blank."""
    text = text.lstrip()
    if not text:
        return None
    if text[0] == "'":
        return _parse_string(text)[0]
    token = text.split("/", 1)[0].strip()
    if not token:
        return None
    if token == "T":
        return True
    if token == "F":
        return False
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        return token  # complex or non-standard: keep the text


def _parse_string(text: str) -> tuple[str, bool]:
    """A quoted string starting at ``text[0] == "'"``; (value, closed)."""
    out, i = [], 1
    while i < len(text):
        char = text[i]
        if char == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out).rstrip(), True
        out.append(char)
        i += 1
    return "".join(out).rstrip(), False


def parse_cards(raw: bytes) -> dict[str, Any]:
    """Keyword -> value of the header blocks ``raw`` (up to ``END``)."""
    text = raw.decode("ascii", errors="replace")
    cards: dict[str, Any] = {}
    last_string_key: str | None = None
    for start in range(0, len(text), CARD):
        card = text[start : start + CARD]
        key = card[:8].rstrip()
        if key == "END":
            break
        if key == "CONTINUE" and last_string_key is not None:
            value = parse_value(card[8:])
            previous = cards[last_string_key]
            if isinstance(value, str) and isinstance(previous, str) and previous.endswith("&"):
                cards[last_string_key] = previous[:-1] + value
                continue
        last_string_key = None
        if key == "HIERARCH":
            name, sep, rest = card[9:].partition("=")
            if not sep:
                continue
            key, value = name.strip(), parse_value(rest)
        elif card[8:10] == "= ":
            value = parse_value(card[10:])
        else:
            continue  # COMMENT, HISTORY, blank cards
        if key and key not in cards:
            cards[key] = value
            if isinstance(value, str):
                last_string_key = key
    return cards


def _data_size(cards: dict[str, Any], where: str) -> int:
    bitpix, naxis = cards.get("BITPIX"), cards.get("NAXIS")
    if bitpix not in (8, 16, 32, 64, -32, -64) or not isinstance(naxis, int) or not 0 <= naxis:
        raise InvalidInputError(f"{where}: invalid BITPIX={bitpix!r} or NAXIS={naxis!r}")
    if naxis == 0:
        return 0
    # Random groups (GROUPS = T) declare NAXIS1 = 0, which does not count.
    first = 2 if cards.get("GROUPS") is True and cards.get("NAXIS1") == 0 else 1
    count = 1
    for i in range(1, naxis + 1):
        n = cards.get(f"NAXIS{i}")
        if not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"{where}: invalid NAXIS{i}={n!r}")
        if i >= first:
            count *= n
    pcount, gcount = cards.get("PCOUNT", 0), cards.get("GCOUNT", 1)
    pcount = pcount if isinstance(pcount, int) else 0
    gcount = gcount if isinstance(gcount, int) else 1
    return abs(bitpix) // 8 * gcount * (pcount + count)


def _read_header(stream, offset: int, where: str) -> bytes:
    blocks = []
    for _ in range(MAX_HEADER_BLOCKS):
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            got = offset + sum(map(len, blocks)) + len(block)
            raise InvalidInputError(
                f"{where}: truncated header (file ends at byte {got} before the END card)"
            )
        blocks.append(block)
        # END is a card of its own: the keyword field at a card boundary.
        for start in range(0, BLOCK, CARD):
            if block[start : start + 8] == b"END     ":
                return b"".join(blocks)
    raise InvalidInputError(f"{where}: no END card in {MAX_HEADER_BLOCKS} header blocks")


def scan_fits(path: str | os.PathLike[str]) -> ScannedFile:
    """The headers of every HDU of ``path``.

    Raises
    ------
    InvalidInputError
        Not a regular file, not FITS (no ``SIMPLE = T`` card first), a header without
        ``END``, invalid axis cards, or a file shorter than its HDUs declare.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            first = stream.read(30)
            if not first.startswith(b"SIMPLE  =") or first[10:30].strip() != b"T":
                shown = first[:16].decode("ascii", errors="replace")
                raise InvalidInputError(f"not a FITS file (starts with {shown!r})")
            stream.seek(0)
            scanned = ScannedFile(name, size)
            offset = 0
            while offset < size:
                where = f"HDU {len(scanned.hdus)}"
                if scanned.hdus and stream.read(8)[:8] != b"XTENSION":
                    # Bytes after the last HDU that are not an extension (FITS allows
                    # "special records"); they are not ours to judge.
                    break
                stream.seek(offset)
                raw = _read_header(stream, offset, where)
                cards = parse_cards(raw)
                data_offset = offset + len(raw)
                data_size = _data_size(cards, where)
                if data_offset + data_size > size:
                    raise InvalidInputError(
                        f"truncated: {where} data need bytes {data_offset}..."
                        f"{data_offset + data_size}, the file has {size}"
                    )
                scanned.hdus.append(
                    ScannedHDU(len(scanned.hdus), cards, raw, data_offset, data_size)
                )
                offset = data_offset + -(-data_size // BLOCK) * BLOCK
                stream.seek(offset)
            return scanned
    except OSError as exc:
        raise InvalidInputError(f"cannot read ({exc.strerror or exc})") from exc
