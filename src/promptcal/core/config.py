"""Configuration base: frozen, validated, documented.

Every field carries a description with its unit in brackets, e.g. ``"[px]"``.
Switches are named ``do_*``. Configs are pydantic models so that a config file
(JSON) or ``--set key=value`` overrides are validated at construction.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from promptcal.core.errors import InvalidInputError


class Config(BaseModel):
    """Frozen, validated configuration; unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    def with_overrides(self, overrides: dict[str, Any]) -> Self:
        """Return a copy with dotted-key overrides applied (``"psf.spatial_order": 1``)."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if not isinstance(node.get(key), dict):
                    raise InvalidInputError(f"unknown config section {key!r} in {dotted!r}")
                node = node[key]
            if leaf not in node:
                raise InvalidInputError(f"unknown config field {dotted!r}")
            node[leaf] = value
        try:
            return type(self).model_validate(data)
        except Exception as exc:  # pydantic.ValidationError
            raise InvalidInputError(f"invalid config override: {exc}") from exc

    def config_hash(self) -> str:
        """A short, stable hash of the full configuration (for provenance)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_set_option(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as JSON when it parses."""
    if "=" not in text:
        raise InvalidInputError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
