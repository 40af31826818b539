"""A campaign's audience: its filter, compiled to SQL, and the recipients streamed in pages.

The filter is evaluated by the database (SQLite's ``json_*`` functions, PostgreSQL's
``->``/``->>`` operators), and the recipients are read in keyset-paginated pages ordered
by id, so a run holds one page in memory whatever the size of the list.

Filter syntax, one key per recipient attribute (every key must match)::

    plan = "pro"                       # equal (strings ignore case)
    country = ["fr", "be"]             # any of these
    status = { not = "dormant" }       # not equal (a recipient without it matches)
    tier = { not_in = ["free", "trial"] }
    age = { min = 18, max = 65 }       # numeric range, inclusive; above/below exclusive
    phone = { exists = true }          # has the attribute (false: has not)
    code = { eq = "AbC", case_sensitive = true }
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import (
    Float,
    String,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ConfigError
from engine.models import LedgerRow, RecipientRow
from engine.types import Recipient

Scalar = str | int | float | bool
_ATTRIBUTES = RecipientRow.__table__.c.attributes  # type: ignore[attr-defined]
_ID = RecipientRow.__table__.c.id  # type: ignore[attr-defined]
_LEDGER = LedgerRow.__table__  # type: ignore[attr-defined]
_EMAIL = RecipientRow.__table__.c.email  # type: ignore[attr-defined]
_SQLITE_LOWER = "tm_lower"  # Python's str.lower, registered on every SQLite connection


class Condition(BaseModel):
    """One attribute's test: ``eq``/``in``, ``not``/``not_in``, a range, or presence."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    eq: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_: Scalar | None = Field(default=None, alias="not")
    not_in: list[Scalar] | None = None
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    exists: bool | None = None
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _something_to_test(self) -> Condition:
        tests = ("eq", "in_", "not_", "not_in", "min", "max", "above", "below", "exists")
        if all(getattr(self, name) is None for name in tests):
            raise ValueError(
                "say what to test: eq, in, not, not_in, min, max, above, below or exists"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


AudienceFilter = dict[str, Scalar | list[Scalar] | Condition]


def as_condition(wanted: Scalar | list[Scalar] | Condition) -> Condition:
    """The shorthand forms as a ``Condition``: a scalar means ``eq``, a list means ``in``."""
    if isinstance(wanted, Condition):
        return wanted
    if isinstance(wanted, list):
        return Condition.model_validate({"in": wanted})
    return Condition(eq=wanted)


class _Attribute:
    """SQL expressions for one JSON attribute, in the database's own dialect."""

    def __init__(self, key: str, dialect: str) -> None:
        self.key, self.dialect = key, dialect
        if dialect == "sqlite":
            self.path = '$."' + key.replace('"', '""') + '"'
            kind: Any = func.json_type(_ATTRIBUTES, self.path)
        else:
            kind = func.json_typeof(_ATTRIBUTES.op("->")(key))
        self.kind = kind

    def text(self) -> ColumnElement[Any]:
        """The value as text: strings as they are, numbers in digits, ``true``/``false``."""
        if self.dialect == "sqlite":
            raw = cast(func.json_extract(_ATTRIBUTES, self.path), String)
            return case((self.kind == "true", "true"), (self.kind == "false", "false"), else_=raw)
        value: ColumnElement[Any] = _ATTRIBUTES.op("->>")(self.key)
        return value

    def number(self) -> ColumnElement[Any]:
        """The value when it is a JSON number, else NULL (a string never compares as one)."""
        if self.dialect == "sqlite":
            numeric = self.kind.in_(["integer", "real"])
            return case((numeric, func.json_extract(_ATTRIBUTES, self.path)))
        return case((self.kind == "number", cast(self.text(), Float)))

    def present(self) -> ColumnElement[bool]:
        """The attribute is there with a value other than null."""
        return func.coalesce(self.kind, "null") != "null"

    def lower(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        folded: ColumnElement[Any] = (
            getattr(func, _SQLITE_LOWER)(value) if self.dialect == "sqlite" else func.lower(value)
        )
        return folded


def _equals(attribute: _Attribute, value: Scalar, case_sensitive: bool) -> ColumnElement[bool]:
    text_value = attribute.text()
    if isinstance(value, bool):
        return text_value == ("true" if value else "false")
    if isinstance(value, int | float):
        # A number matches numbers equal to it, and text spelling it (older imports).
        return or_(attribute.number() == value, text_value == str(value))
    if case_sensitive:
        return text_value == value
    return attribute.lower(text_value) == value.lower()


def _clause(attribute: _Attribute, condition: Condition) -> ColumnElement[bool]:
    def equals(value: Scalar) -> ColumnElement[bool]:
        return _equals(attribute, value, condition.case_sensitive)

    def never(test: ColumnElement[bool]) -> ColumnElement[bool]:
        # NULL (no such attribute) counts as "not equal": the test is false, not unknown.
        return not_(func.coalesce(test, false()))

    tests: list[ColumnElement[bool]] = []
    if condition.eq is not None:
        tests.append(equals(condition.eq))
    if condition.in_ is not None:
        tests.append(or_(false(), *(equals(v) for v in condition.in_)))
    if condition.not_ is not None:
        tests.append(never(equals(condition.not_)))
    if condition.not_in is not None:
        tests.append(never(or_(false(), *(equals(v) for v in condition.not_in))))
    number = attribute.number()
    for bound, compare in (
        (condition.min, number.__ge__),
        (condition.max, number.__le__),
        (condition.above, number.__gt__),
        (condition.below, number.__lt__),
    ):
        if bound is not None:
            tests.append(compare(bound))
    if condition.exists is not None:
        tests.append(attribute.present() if condition.exists else not_(attribute.present()))
    return and_(true(), *tests)


def audience_clause(audience: Mapping[str, Any], dialect: str) -> ColumnElement[bool]:
    """The SQL ``WHERE`` clause selecting ``audience`` on a database of ``dialect``."""
    return and_(
        true(),
        *(_clause(_Attribute(key, dialect), as_condition(v)) for key, v in audience.items()),
    )


def check_audience_keys(db: SAEngine, audience: Mapping[str, Any], where: str) -> None:
    """Raise ``ConfigError`` when a filter key is an attribute that no recipient has.

    The message names the key and the attributes that do exist, so a typo never turns
    into a send to nobody (or, with ``not``, to everybody).
    """
    if not audience:
        return
    dialect = db.dialect.name
    with db.connect() as conn:
        for key in audience:
            attribute = _Attribute(key, dialect)
            found = conn.execute(
                select(literal(1)).where(attribute.kind.is_not(None)).limit(1)
            ).first()
            if found is None:
                known = _attribute_names(conn, dialect)
                listed = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
                raise ConfigError(
                    f"{where}: audience filter on {key!r}, an attribute no recipient has "
                    f"(attributes: {listed or 'none, no recipients imported yet'})"
                )


def _attribute_names(conn: Any, dialect: str) -> list[str]:
    if dialect == "sqlite":
        sql = "SELECT DISTINCT j.key FROM recipients, json_each(recipients.attributes) AS j"
    else:
        sql = "SELECT DISTINCT json_object_keys(attributes) FROM recipients"
    return sorted(str(name) for name in conn.execute(text(sql)).scalars())


def count_audience(
    db: SAEngine, audience: Mapping[str, Any], without_run: str | None = None
) -> int:
    """How many recipients ``audience`` selects (with ``without_run``: of those, how many
    have no ledger row in that run yet)."""
    stmt = select(func.count()).select_from(_ID.table)
    if without_run is not None:
        row = select(_LEDGER.c.id).where(
            _LEDGER.c.run_id == without_run, _LEDGER.c.recipient_id == _ID
        )
        stmt = stmt.where(~row.exists())
    with db.connect() as conn:
        where = audience_clause(audience, db.dialect.name)
        return int(conn.execute(stmt.where(where)).scalar_one())


def stream_audience(
    db: SAEngine,
    audience: Mapping[str, Any],
    page_size: int,
    ids: Sequence[str] | None = None,
    bounds: tuple[str, str | None] = ("", None),
) -> Iterator[list[Recipient]]:
    """The recipients ``audience`` selects, ordered by id, one page of ``page_size`` at a time.

    Keyset pagination (``id > last``), so each page is an index range scan and memory
    holds one page. With ``ids``, only those recipients (the ones still in the audience).
    ``bounds`` (after, until) keeps ids with ``after < id <= until``: one shard of a run.
    """
    after, until = bounds
    stmt = (
        select(_ID, _EMAIL, _ATTRIBUTES)
        .where(audience_clause(audience, db.dialect.name))
        .where(_ID.__gt__(bindparam("after", type_=String)))
        .order_by(_ID)
        .limit(page_size)
    )
    if ids is not None:
        stmt = stmt.where(_ID.in_(sorted(ids)))
    if until is not None:
        stmt = stmt.where(until >= _ID)
    while True:
        with db.connect() as conn:
            rows = conn.execute(stmt, {"after": after}).all()
        if not rows:
            return
        yield [Recipient(rid, email, attributes or {}) for rid, email, attributes in rows]
        if len(rows) < page_size:
            return
        after = rows[-1][0]


def shard_bounds(
    db: SAEngine, audience: Mapping[str, Any], shard_size: int
) -> list[tuple[str, str | None]]:
    """Keyset ranges ``(after, until]`` of the audience, about ``shard_size`` ids each.

    The boundaries are every ``shard_size``-th id in id order, read as ids only; the last
    range is open-ended, so recipients imported while the run goes on still fall in one.
    """
    stmt = select(_ID).where(audience_clause(audience, db.dialect.name)).order_by(_ID)
    cuts: list[str] = []
    last = None
    with db.connect() as conn:
        for position, (rid,) in enumerate(conn.execute(stmt), start=1):
            last = rid
            if position % shard_size == 0:
                cuts.append(rid)
    if cuts and cuts[-1] == last:  # no empty shard after the last id
        cuts.pop()
    starts = ["", *cuts]
    ends: list[str | None] = [*cuts, None]
    return list(zip(starts, ends, strict=True))
