"""Durations as configuration spells them: ``"90s"``, ``"30m"``, ``"12h"``, ``"3d"``, ``"1w"``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | int | float) -> timedelta:
    """``"3d"``, ``"12h"``, ``"90s"`` or a number of seconds."""
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like '90s', '30m', '12h' or '3d'")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def duration_field(value: Any) -> Any:
    """A pydantic ``mode="before"`` validator body: strings and numbers become durations."""
    return parse_duration(value) if isinstance(value, str | int | float) else value


def format_duration(duration: timedelta) -> str:
    """The shortest exact spelling: ``timedelta(days=3)`` is ``"3d"``, 90 seconds ``"90s"``."""
    seconds = duration.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"
