"""The ledger's SQL: the guarded batch statements and their parameters.

Only ``engine.ledger`` imports this module; a row's status changes nowhere else.

A batch's per-row changes (the hand-over's links and ids, the outcomes) are one
statement each. On PostgreSQL the batch travels as one array per column and the UPDATE
reads the rows from ``unnest(...)``: one statement, compiled once and planned once per
batch, where an ``executemany`` is one UPDATE per row. SQLite has no arrays, and its
``executemany`` is a loop inside the process with no round trips, so there the same
guarded UPDATE runs per row. Both give the same guard: the state the row leaves, and
the holder.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Integer,
    Text,
    bindparam,
    case,
    cast,
    column,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from engine.models import LedgerRow, LedgerStatus
from engine.types import SendResult, SendStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine
    from sqlalchemy.orm import Session

LEDGER = LedgerRow.__table__  # type: ignore[attr-defined]
"""The ledger table (SQLAlchemy Core: one statement per batch, no ORM objects)."""

STATUS_FOR = {
    SendStatus.SENT: LedgerStatus.SENT,
    SendStatus.TEMPORARY_FAILURE: LedgerStatus.DEFERRED,
    SendStatus.PERMANENT_FAILURE: LedgerStatus.FAILED,
    SendStatus.UNKNOWN: LedgerStatus.UNKNOWN,
}
"""The ledger state a delivery outcome leads to."""

HELD = (LedgerStatus.PENDING, LedgerStatus.HANDED_OVER)
"""The states in which a row belongs to a worker (under its lease)."""


def held_by(owner: str | None) -> ColumnElement[bool]:
    """The guard: the row is held by ``owner`` (no owner: rows from before leases)."""
    guard: ColumnElement[bool] = (
        LEDGER.c.owner.is_(None) if owner is None else LEDGER.c.owner == owner
    )
    return guard


def change(
    send_id: int,
    leaving: str,
    status: str,
    error: str | None,
    now: datetime,
    result: SendResult | None = None,
) -> dict[str, Any]:
    """The parameters of one row's outcome (``apply_outcomes``)."""
    return {
        "b_id": send_id,
        "b_from": leaving,
        "b_status": status,
        "b_provider": result.provider_id if result else None,
        "b_error": error[:2000] if error else None,
        "b_sent_at": now if status == LedgerStatus.SENT else None,
    }


def answered(send_id: int, leaving: str, result: SendResult, now: datetime) -> dict[str, Any]:
    """``_change`` for a row the transport answered for."""
    return change(send_id, leaving, STATUS_FOR[result.status], result.error, now, result)


def rows_of_arrays(types: dict[str, Any]) -> Any:
    """``unnest(:a, :b, ...) AS v(a, b, ...)``: a batch's rows sent as one array per
    column (PostgreSQL), named and typed by ``types``."""
    arrays = [bindparam(name, type_=ARRAY(kind)) for name, kind in types.items()]
    names = [column(name, kind) for name, kind in types.items()]
    return func.unnest(*arrays).table_valued(*names).render_derived(name="v")


def as_arrays(changes: Sequence[dict[str, Any]], types: dict[str, Any]) -> dict[str, list[Any]]:
    """The parameters of ``rows_of_arrays(types)``: each column's values, in row order."""
    return {name: [change[name] for change in changes] for name in types}


OUTCOMES = rows_of_arrays(
    {
        "b_id": Integer(),
        "b_from": Text(),
        "b_status": Text(),
        "b_provider": Text(),
        "b_error": Text(),
        "b_sent_at": DateTime(timezone=True),
    }
)
"""A batch's outcomes as rows (PostgreSQL): the parameters ``change`` makes."""


def _outcome(source: dict[str, Any], owner: str | None, any_owner: bool) -> Any:
    """The guarded outcome UPDATE reading each row's values from ``source`` (bound
    parameters, or the columns of ``OUTCOMES``)."""
    stmt = update(LEDGER).where(LEDGER.c.id == source["b_id"], LEDGER.c.status == source["b_from"])
    if not any_owner:
        stmt = stmt.where(held_by(owner))
    # A provider id that is our own Message-ID (SMTP, and backends without ids of their
    # own) is found through ``message_id`` already: not stored twice, nor indexed twice.
    provider = case((source["b_provider"] == LEDGER.c.message_id, None), else_=source["b_provider"])
    return stmt.values(
        status=source["b_status"],
        provider_id=provider,
        error=source["b_error"],
        sent_at=source["b_sent_at"],
        lease_expires=None,
    )


def apply_outcomes(
    session: Session,
    changes: Sequence[dict[str, Any]],
    owner: str | None,
    *,
    any_owner: bool = False,
) -> None:
    """Per-row outcomes (``change``), each guarded on the state it leaves and (unless
    ``any_owner``) the holder: a row another worker took over or finalized stays as is."""
    if not changes:
        return
    if session.get_bind().dialect.name != "postgresql":
        binds: dict[str, Any] = {name: bindparam(name) for name in changes[0]}
        session.execute(_outcome(binds, owner, any_owner), list(changes))
        return
    columns = dict(OUTCOMES.c.items())
    session.execute(_outcome(columns, owner, any_owner), as_arrays(changes, columns))


HAND_OVERS = rows_of_arrays(
    {"b_id": Integer(), "b_links": Text(), "b_link_items": Text(), "b_mid": Text(), "b_ref": Text()}
)
"""A batch's hand-overs as rows (PostgreSQL): links and link items as JSON text."""


def hand_over_rows(
    session: Session, owner: str | None, expiry: datetime, changes: Sequence[dict[str, Any]]
) -> set[int]:
    """pending -> handed_over for the rows of ``changes`` that ``owner`` still holds,
    storing each one's links, Message-ID and send reference; returns their ids."""
    if not changes:
        return set()
    held = (held_by(owner), LEDGER.c.status == LedgerStatus.PENDING)
    handed = {"status": LedgerStatus.HANDED_OVER, "lease_expires": expiry}
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        # One guarded UPDATE per row (executemany: no round trips on SQLite). When every
        # row moved (the rule), the count says so; else the rows tell which did.
        result: Any = session.execute(
            update(LEDGER)
            .where(LEDGER.c.id == bindparam("b_id"), *held)
            .values(
                **handed,
                links=bindparam("b_links"),
                link_items=bindparam("b_link_items"),
                message_id=bindparam("b_mid"),
                send_ref=bindparam("b_ref"),
            ),
            list(changes),
        )
        ids = [row["b_id"] for row in changes]
        if result.rowcount == len(ids):
            return set(ids)
        still = (held_by(owner), LEDGER.c.status == LedgerStatus.HANDED_OVER)
        return set(session.scalars(select(LEDGER.c.id).where(LEDGER.c.id.in_(ids), *still)))
    # JSON as the columns' own type writes it (None included), read back as JSON there
    as_json = LEDGER.c.links.type.bind_processor(dialect)
    rows = [
        change
        | {"b_links": as_json(change["b_links"]), "b_link_items": as_json(change["b_link_items"])}
        for change in changes
    ]
    v = HAND_OVERS.c
    stmt = (
        update(LEDGER)
        .where(LEDGER.c.id == v.b_id, *held)
        .values(
            **handed,
            links=cast(v.b_links, JSON),
            link_items=cast(v.b_link_items, JSON),
            message_id=v.b_mid,
            send_ref=v.b_ref,
        )
        .returning(LEDGER.c.id)
    )
    return set(session.scalars(stmt, as_arrays(rows, dict(v.items()))).all())


def refresh_statistics(db: SAEngine) -> None:
    """Refresh PostgreSQL's statistics of the ledger (a no-op on SQLite).

    A run adds rows faster than autovacuum looks (once a minute), and the planner
    estimates from what it last saw: for a fresh ledger, nothing. With those figures, the
    per-page lookups (who is done, who is capped) read every row the run has written
    instead of using the recipient's index, a cost that grows with the run. ``ANALYZE``
    samples at most 30,000 rows (~0.1 s); a user who does not own the table gets a
    warning from the server, not an error.
    """
    if db.dialect.name == "postgresql":
        with db.begin() as connection:
            connection.execute(text("ANALYZE ledger"))
