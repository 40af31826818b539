"""Durations as configuration spells them: ``"90s"``, ``"30m"``, ``"12h"``, ``"3d"``, ``"1w"``.

A bare number is refused: ``frequency_cap = 6`` read as six seconds once mailed everyone
again seven seconds later. Keys whose unit is in their name (``*_seconds``) are plain
numbers and never come here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_NUMBER = re.compile(r"^\s*[-+]?(\d+(?:\.\d*)?|\.\d+)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
ACCEPTED = '"90s", "30m", "12h", "3d" or "1w"'
"""The accepted forms, as error messages show them."""


def _bare_number(value: str | int | float) -> str:
    shown = value.strip() if isinstance(value, str) else f"{value:g}"
    units = ", ".join(f'"{shown}{unit}"' for unit in ("s", "h", "d"))
    return f"{shown} is a bare number; write a duration with its unit: {units}"


def parse_duration(value: str | int | float) -> timedelta:
    """``"3d"``, ``"12h"``, ``"30m"``, ``"90s"`` or ``"1w"``; a bare number (``6`` or
    ``"6"``) is a ``ValueError`` that shows the forms with units."""
    if isinstance(value, int | float) or _NUMBER.match(value):
        raise ValueError(_bare_number(value))
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration; write one like {ACCEPTED}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def duration_field(value: Any) -> Any:
    """A pydantic ``mode="before"`` validator body: strings become durations, numbers are
    refused (see ``parse_duration``), a ``timedelta`` passes as it is."""
    return parse_duration(value) if isinstance(value, str | int | float) else value


def format_duration(duration: timedelta) -> str:
    """The shortest exact spelling: ``timedelta(days=3)`` is ``"3d"``, 90 seconds ``"90s"``."""
    seconds = duration.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"
