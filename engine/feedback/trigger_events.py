"""What happens to a triggered alert after it left, reported to the status webhooks.

A stored event (delivered, bounced, complained, a human's click, an unsubscribe) of a send
that a trigger made becomes a ``trigger.<outcome>`` delivery for each subscription that
wants it (``engine.feedback.status_webhooks``), in the transaction that stores the event:
an event stored is an event reported. Opens are not reported (machine opens make them
noise); bots' and link scanners' clicks are not either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, select
from sqlmodel import Session

from engine.feedback.status_webhooks import SUBSCRIPTIONS, StatusEvent, enqueue_many
from engine.models import LedgerRow

OUTCOMES = {
    "delivered": "delivered",
    "bounce": "bounced",
    "complaint": "complained",
    "click": "clicked",
    "unsubscribe": "unsubscribed",
}
"""Stored event type -> the outcome a subscriber sees."""


def report_trigger_events(session: Session, events: Sequence[dict[str, Any]]) -> int:
    """Enqueue the status deliveries of ``events`` (rows as stored) whose sends belong to
    triggers; returns how many deliveries. One query when nobody subscribed."""
    wanted = [
        e
        for e in events
        if e.get("send_id") is not None
        and e["type"] in OUTCOMES
        and not (e["type"] == "click" and (e.get("bot") or e.get("machine")))
    ]
    if not wanted or not session.scalar(
        select(exists().where(SUBSCRIPTIONS.disabled_at.is_(None)))
    ):
        return 0
    ledger = LedgerRow.__table__.c  # type: ignore[attr-defined]
    ids = sorted({e["send_id"] for e in wanted})
    stmt = select(ledger.id, ledger.trigger_id, ledger.campaign).where(
        ledger.id.in_(ids), ledger.trigger_id != ""
    )
    triggers = {
        send_id: (trigger_id, campaign) for send_id, trigger_id, campaign in session.execute(stmt)
    }
    reports = []
    for event in wanted:
        found = triggers.get(event["send_id"])
        if found is None:
            continue
        data: dict[str, Any] = {"at": event["timestamp"].isoformat()}
        if event["type"] == "click" and event.get("url"):
            data["url"] = event["url"]
        reports.append(StatusEvent(found[0], found[1], OUTCOMES[event["type"]], data))
    return enqueue_many(session, reports)
