"""Why a campaign's audience selects nobody: the filter it applied and the values present.

A typo in a filter value (``country = "FRA"`` where the data says ``FR``) must not pass
for a quiet run to nobody. The explanation names the condition that matches no recipient
and the nearest values the database holds: close spellings first (``difflib``), then the
most common ones, from one bounded ``GROUP BY`` query per key (no recipient is loaded).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine as SAEngine

from engine.audience.filters import Condition, Scalar, _Attribute, _clause, as_condition

DISTINCT_VALUES = 200
"""How many of an attribute's most common values are read to find the nearest ones."""
SHOWN = 8
"""How many values an explanation lists."""


def describe_filter(key: str, wanted: Scalar | list[Scalar] | Condition) -> str:
    """One condition as it reads in the campaign file: ``country = "FRA"``."""
    if isinstance(wanted, Condition):
        fields = wanted.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
        inner = ", ".join(f"{name} = {json.dumps(value)}" for name, value in fields.items())
        return f"{key} = {{ {inner} }}"
    return f"{key} = {json.dumps(wanted)}"


def _wanted_text(condition: Condition) -> list[str]:
    """The values a condition asks for by equality, as text (what nearest values match)."""
    values = [condition.eq] if condition.eq is not None else list(condition.in_ or [])
    return [str(v) for v in values if not isinstance(v, bool)]


def nearest_values(db: SAEngine, key: str, wanted: list[str]) -> tuple[list[str], bool]:
    """The values of attribute ``key`` present, those closest to ``wanted`` first, then
    the most common; at most ``SHOWN`` (the query reads ``DISTINCT_VALUES`` at most), and
    whether there are more."""
    attribute = _Attribute(key, db.dialect.name)
    value = attribute.text()
    stmt = (
        select(value, func.count())
        .where(attribute.present())
        .group_by(value)
        .order_by(func.count().desc(), value)
        .limit(DISTINCT_VALUES)
    )
    with db.connect() as conn:
        common = [str(v) for v, _ in conn.execute(stmt).all() if v is not None]
    by_folded = {v.lower(): v for v in reversed(common)}  # the most common spelling wins
    close: list[str] = []
    for asked in wanted:
        for match in difflib.get_close_matches(asked.lower(), list(by_folded), n=3, cutoff=0.5):
            if by_folded[match] not in close:
                close.append(by_folded[match])
    ordered = close + [v for v in common if v not in close]
    return ordered[:SHOWN], len(ordered) > SHOWN


def _matches(db: SAEngine, key: str, condition: Condition) -> int:
    stmt = select(func.count()).where(_clause(_Attribute(key, db.dialect.name), condition))
    with db.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def why_empty(db: SAEngine, audience: Mapping[str, Any], where: str) -> str:
    """One line: why ``audience`` selects nobody, and what to change (``where`` names the
    campaign)."""
    if not audience:
        return (
            f"{where}: the audience is empty: no recipients imported yet; import them with "
            "`tailormail import recipients FILE`"
        )
    parts, counts = [], []
    for key, wanted in audience.items():
        condition = as_condition(wanted)
        shown = describe_filter(key, wanted)
        found = _matches(db, key, condition)
        counts.append(f"{shown} matches {found}")
        if found == 0:
            values, more = nearest_values(db, key, _wanted_text(condition))
            listed = ", ".join(values) + (", ..." if more else "")
            parts.append(f"{shown} matches no recipient (the values of {key} are: {listed})")
    if not parts:  # each condition matches someone, together nobody
        parts.append("no recipient matches every condition at once (" + "; ".join(counts) + ")")
    return (
        f"{where}: the audience is empty: "
        + "; ".join(parts)
        + "; fix the audience filter in the campaign's file"
    )
