"""How long the API's stores keep what callers sent (``[api]`` retention settings).

``Idempotency-Key`` answers are deleted after ``idempotency_retention`` (a day by default:
a client retries within minutes, not days); a trigger's payload (its event data, the
answer it got) after ``trigger_retention`` once its alert is done (sent, failed, skipped:
its ledger row keeps the decision and the outcome); status webhook deliveries when their
triggers go. The leader runs this hourly; ``tailormail forget`` erases a person's at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from engine.db import session_scope
from engine.feedback.status_webhooks import forget_triggers
from engine.ledger.statements import LEDGER
from engine.models import LedgerStatus, TriggerRow, utcnow
from engine.sending.idempotency import purge

if TYPE_CHECKING:
    from engine.app import Engine

DONE = (LedgerStatus.SENT, LedgerStatus.FAILED, LedgerStatus.SKIPPED, LedgerStatus.UNKNOWN)


@dataclass(frozen=True)
class ApiPurge:
    """What one pass deleted."""

    idempotency_keys: int
    triggers: int


def purge_api_data(engine: Engine, now: datetime | None = None) -> ApiPurge:
    """Delete the idempotency answers and the done triggers' payloads that outlived their
    retention; returns how many of each."""
    now = now or utcnow()
    settings = engine.settings.api
    keys = purge(engine.db, now - settings.idempotency_retention)
    table = TriggerRow.__table__  # type: ignore[attr-defined]
    done = select(LEDGER.c.id).where(LEDGER.c.status.in_(DONE))
    old = (
        select(table.c.id)
        .where(table.c.created_at < now - settings.trigger_retention)
        .where(table.c.send_id.in_(done) | table.c.send_id.is_(None))
    )
    with session_scope(engine.db) as session:
        ids = [str(i) for i in session.scalars(old).all()]
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            forget_triggers(session, chunk)
            session.execute(delete(table).where(table.c.id.in_(chunk)))
    return ApiPurge(keys, len(ids))
