"""unknown -> sent | failed, from what a provider (or a reader) later says about the send.

The other way out of ``unknown`` (``RunLedger.reconcile_unknown``) asks the backend; this
one takes the evidence of stored events (``engine.feedback.events``): any sign that the message
reached the provider or the reader makes it ``sent``, a hard bounce ``failed``. It runs
in the transaction that stores the events, and touches only rows still ``unknown``, so a
later event never rewrites a settled outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlmodel import Session, col

from engine.models import LedgerRow, LedgerStatus, as_utc

_T = LedgerRow.__table__  # type: ignore[attr-defined]
_CHUNK = 500  # keeps IN (...) lists well below every database's bound-parameter limit
HARD_BOUNCE_ERROR = "hard bounce reported after an unknown outcome"


def settle_unknown(session: Session, outcomes: Sequence[tuple[int, str, datetime]]) -> int:
    """Apply ``(send id, sent | failed, when)`` to the sends still ``unknown``; one statement.

    Returns how many rows settled. Most events are about settled sends: one query per 500
    ids finds the few still unknown before anything is written.
    """
    wanted = sorted({send_id for send_id, _, _ in outcomes})
    unknown: set[int] = set()
    for start in range(0, len(wanted), _CHUNK):
        query = (
            select(col(LedgerRow.id))
            .where(col(LedgerRow.id).in_(wanted[start : start + _CHUNK]))
            .where(col(LedgerRow.status) == LedgerStatus.UNKNOWN)
        )
        unknown.update(row_id for row_id in session.scalars(query) if row_id is not None)
    changes = [
        {
            "b_id": send_id,
            "b_status": status,
            "b_sent_at": as_utc(moment) if status == LedgerStatus.SENT else None,
            "b_error": HARD_BOUNCE_ERROR if status == LedgerStatus.FAILED else None,
        }
        for send_id, status, moment in outcomes
        if send_id in unknown and status in (LedgerStatus.SENT, LedgerStatus.FAILED)
    ]
    if not changes:
        return 0
    # The first event of a send settles it; a second one finds it no longer unknown.
    first = list({change["b_id"]: change for change in reversed(changes)}.values())
    stmt = (
        update(_T)
        .where(_T.c.id == bindparam("b_id"))
        .where(_T.c.status == LedgerStatus.UNKNOWN)
        .values(
            status=bindparam("b_status"), sent_at=bindparam("b_sent_at"), error=bindparam("b_error")
        )
    )
    session.execute(stmt, first)
    return len(first)
