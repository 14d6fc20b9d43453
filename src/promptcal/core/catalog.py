"""Source catalogs: astropy Tables that resolve LSST ``slot_*`` aliases."""

from __future__ import annotations

from typing import Any

from astropy.table import Row, Table

#: LSST slot -> measurement that fills it.
DEFAULT_SLOTS: dict[str, str] = {
    "slot_Centroid": "base_SdssCentroid",
    "slot_Shape": "ext_shapeHSM_HsmSourceMoments",
    "slot_PsfShape": "ext_shapeHSM_HsmPsfMoments",
    "slot_PsfFlux": "base_PsfFlux",
    "slot_GaussianFlux": "base_GaussianFlux",
    "slot_ApFlux": "base_CircularApertureFlux_12_0",
    "slot_CalibFlux": "base_CircularApertureFlux_12_0",
}


class SourceRow(Row):
    """A catalog row whose ``slot_*`` names resolve like the catalog's."""

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            item = self._table.resolve(item)
        return super().__getitem__(item)


class SourceCatalog(Table):
    """An astropy Table whose ``slot_*`` names resolve to their measurement columns.

    The alias map lives in ``meta["slots"]`` so it survives copies and Parquet files.
    """

    Row = SourceRow

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meta.setdefault("slots", dict(DEFAULT_SLOTS))

    def resolve(self, name: str) -> str:
        """The real column name behind ``name`` (aliases resolved)."""
        if name in self.colnames or not name.startswith("slot_"):
            return name
        for slot, target in self.meta["slots"].items():
            if name == slot or name.startswith(slot + "_"):
                return target + name[len(slot) :]
        return name

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            item = self.resolve(item)
        return super().__getitem__(item)

    def __setitem__(self, item: Any, value: Any) -> None:
        if isinstance(item, str) and item not in self.colnames:
            resolved = self.resolve(item)
            if resolved in self.colnames:
                item = resolved
        super().__setitem__(item, value)

    def has(self, name: str) -> bool:
        """Whether ``name`` (alias or real column) exists."""
        return self.resolve(name) in self.colnames

    def set_slot(self, slot: str, target: str) -> None:
        """Point ``slot`` (e.g. ``"slot_CalibFlux"``) at a measurement prefix."""
        self.meta["slots"] = {**self.meta["slots"], slot: target}
