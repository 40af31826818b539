"""Many rows into a PostgreSQL table by ``COPY``, skipping unique-key collisions.

``COPY`` has no ``ON CONFLICT``, and a run's rows can collide with another worker's, so a
batch goes through a staging table: ``COPY`` into a temporary table of the same columns,
then one ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``. The server reads the
rows as one stream instead of parsing a statement with a parameter per value, and the
client writes text instead of quoting each value into SQL: for the ledger's claim (a
500-row batch of 25 columns, four of them JSON) it is 0.07 ms a row where the multi-row
``INSERT`` took 0.16, both halves of it (``bench/ledger_rate.py``).

Everything happens in the caller's transaction: the staging table is made when the
session does not have it (``to_regclass``, so a creation rolled back with its transaction
is made again), the ``INSERT`` empties it as it reads it, and a transaction that fails
half-way leaves it empty too (``ON COMMIT DELETE ROWS``, and a rollback undoes the rows).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.orm import Session

COPY_FROM = 32
"""Rows from which a batch goes by ``COPY``: below it, one multi-row ``INSERT`` (one
statement instead of three) is cheaper."""

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def can_copy(session: Session, table: Table, values: Sequence[dict[str, Any]]) -> bool:
    """Whether ``values`` can go by ``copy_returning``: PostgreSQL through psycopg2, a
    batch of at least ``COPY_FROM`` rows, every row naming the same columns and every
    column with a default among them (``COPY`` would not compute it)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or bind.dialect.driver != "psycopg2":
        return False
    if len(values) < COPY_FROM:
        return False
    names = values[0].keys()
    if any(row.keys() != names for row in values):
        return False
    defaulted = {c.name for c in table.c if c.default is not None and not c.primary_key}
    return defaulted <= names


def copy_returning(
    session: Session, table: Table, values: Sequence[dict[str, Any]], returned: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Insert ``values`` into ``table`` skipping unique-key collisions (``can_copy`` said
    yes); returns the ``returned`` columns of the rows that landed."""
    connection = session.connection()
    dialect = connection.dialect
    names = list(values[0])
    staging = f"_copy_{table.name}"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SELECT to_regclass(%s) IS NULL", (f"pg_temp.{staging}",))
        (missing,) = cursor.fetchone() or (True,)
        if missing:
            cursor.execute(
                f'CREATE TEMPORARY TABLE "{staging}" ON COMMIT DELETE ROWS '
                f'AS SELECT * FROM "{table.name}" WITH NO DATA'
            )
        listed = ", ".join(f'"{name}"' for name in names)
        cursor.copy_expert(
            f'COPY "{staging}" ({listed}) FROM STDIN', _as_copy_text(table, dialect, values)
        )
        wanted = ", ".join(f'"{name}"' for name in returned)
        # The staging rows are deleted as they are read: a second batch in the same
        # transaction starts from an empty table.
        cursor.execute(
            f'WITH batch AS (DELETE FROM "{staging}" RETURNING *) '
            f'INSERT INTO "{table.name}" ({listed}) SELECT {listed} FROM batch '
            f"ON CONFLICT DO NOTHING RETURNING {wanted}"
        )
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _as_copy_text(table: Table, dialect: Any, values: Sequence[dict[str, Any]]) -> io.StringIO:
    """``values`` in ``COPY``'s text format, each value as its column's type binds it.

    Built a column at a time (one tight loop per column, strings escaped inline), and a
    JSON value that is the same object in every row (the ledger's offered variants) is
    encoded once."""
    columns = []
    for name in values[0]:
        raw = [row[name] for row in values]
        bind = table.c[name].type.bind_processor(dialect)
        if bind is not None:
            raw = _bound(raw, bind)
        columns.append(
            [
                "\\N" if v is None else v.translate(_ESCAPES) if type(v) is str else _field(v)
                for v in raw
            ]
        )
    out = io.StringIO()
    out.write("\n".join("\t".join(fields) for fields in zip(*columns, strict=True)))
    out.write("\n")
    out.seek(0)
    return out


def _bound(raw: list[Any], bind: Any) -> list[Any]:
    """``raw`` through a column's bind processor; a dict or list object seen before (by
    identity: they are all alive in ``raw``) reuses its first result."""
    seen: dict[int, Any] = {}
    bound: list[Any] = []
    for value in raw:
        if value is None:
            bound.append(None)
        elif type(value) is dict or type(value) is list:
            key = id(value)
            if key not in seen:
                seen[key] = bind(value)
            bound.append(seen[key])
        else:
            bound.append(bind(value))
    return bound


def _field(value: Any) -> str:
    """One value in ``COPY``'s text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).translate(_ESCAPES)
