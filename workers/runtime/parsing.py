"""Small parsers shared by settings sections and command-line options: comma lists and short durations.

They live on the framework floor so every package's settings section (and the CLI) can use them without
importing another package's settings."""
from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def comma_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (settings and command-line options alike)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_duration(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` → timedelta (ValueError otherwise)."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"invalid duration {value!r}: use a number and a unit s, m, h, d or w (e.g. 30d)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def short_duration(value: object) -> object:
    """A short duration string (``30d``) as a timedelta; anything else unchanged, for pydantic to read (ISO 8601
    ``P30D``, seconds) or reject. For ``mode="before"`` field validators."""
    if isinstance(value, str) and _DURATION.match(value):
        return parse_duration(value)
    return value
