"""The ledger's SQL: the guarded per-row outcome statement and its parameters.

Only ``engine.ledger`` imports this module; a row's status changes nowhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, update

from engine.models import LedgerRow, LedgerStatus
from engine.types import SendResult, SendStatus

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
    """The parameters of ``outcome_statement`` for one row."""
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


def outcome_statement(owner: str | None, *, any_owner: bool = False) -> Any:
    """Per-row outcome, guarded on the state it leaves (and the holder, unless ``any_owner``)."""
    stmt = update(LEDGER).where(
        LEDGER.c.id == bindparam("b_id"), LEDGER.c.status == bindparam("b_from")
    )
    if not any_owner:
        stmt = stmt.where(held_by(owner))
    return stmt.values(
        status=bindparam("b_status"),
        provider_id=bindparam("b_provider"),
        error=bindparam("b_error"),
        sent_at=bindparam("b_sent_at"),
        lease_expires=None,
    )
