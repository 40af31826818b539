"""Ledger rows made by hand, as the pipeline would leave them: ``add_send`` (a sent row with
tracked ``LINKS``), ``claim_by_hand`` (pending rows claimed with a fixed decision) and
``message_for`` (the message of a claimed row).
"""

from __future__ import annotations

import uuid

from engine.app import Engine
from engine.db import session_scope
from engine.ledger import RunLedger
from engine.models import LedgerRow, LedgerStatus, utcnow
from engine.types import Message

LINKS = ["https://example.com/a?x=1&y=2", "https://shop.example/b"]


def add_send(
    engine: Engine,
    email: str = "Ann@Example.com",
    provider_id: str | None = None,
    links: list[str] = LINKS,
) -> int:
    """A sent ledger row with tracked links (``LINKS``), as the pipeline leaves it."""
    with session_scope(engine.db) as session:
        row = LedgerRow(
            run_id="alerts@20250101T090000",
            campaign="alerts",
            recipient_id=uuid.uuid4().hex,
            email=email,
            decision_id=uuid.uuid4().hex,
            status=LedgerStatus.SENT,
            variant="a",
            probability=1.0,
            links=list(links),
            provider_id=provider_id,
            sent_at=utcnow(),
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


def claim_by_hand(engine: Engine, ledger: RunLedger, n: int) -> list[LedgerRow]:
    """Claim the first ``n`` recipients with a fixed decision (variant ``a``)."""
    people = engine.audience(engine.campaign("alerts"))[:n]
    rows = [
        {
            "run_id": ledger.run_id,
            "campaign": "alerts",
            "recipient_id": p.recipient_id,
            "email": p.email,
            "decision_id": f"{ledger.run_id}-{p.recipient_id}",
            "status": LedgerStatus.PENDING,
            "variant": "a",
            "probability": 0.5,
            "pmf": {"a": 0.5, "b": 0.5},
            "context": {},
            "policy": "uniform",
            "items": [],
        }
        for p in people
    ]
    owned, _ = ledger.claim(rows)
    return sorted(owned, key=lambda r: r.email)


def message_for(row: LedgerRow) -> Message:
    assert row.id is not None
    return Message(row.id, f"<{row.id}@test>", "a@example.com", row.email, "s", "<p>h</p>", "t")
