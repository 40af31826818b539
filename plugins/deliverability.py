"""Built-in deliverability: refused addresses become hard bounces; bad rates pause a campaign.

A backend that reports a recipient refused by the receiving server (``SendResult.rejected``,
an SMTP 5xx at RCPT) produces a hard-bounce event, stored like a provider's: the address
is suppressed before the next send. Each stored complaint or hard bounce re-checks its
campaign's rates (``engine.sending.deliverability.check_campaign``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import hookimpl
from engine.db import session_scope
from engine.feedback.events import record_event, suppression_reason
from engine.models import LedgerRow, utcnow
from engine.sending.deliverability import check_campaign
from engine.types import EventType, Message, SendResult, TrackingEvent

if TYPE_CHECKING:
    from engine.app import Engine


@hookimpl
def message_sent(engine: Engine, message: Message, result: SendResult) -> None:
    """Store a synchronous refusal of the address as a hard bounce (it suppresses it)."""
    if not result.rejected:
        return
    event = TrackingEvent(
        type=EventType.BOUNCE,
        send_id=message.send_id,
        timestamp=utcnow(),
        recipient_email=message.to_address,
        data={"bounce_type": "hard", "diagnostic": result.error or "", "source": "delivery"},
    )
    record_event(engine, event, dedupe_key=f"delivery:rejected:{message.send_id}")


@hookimpl
def tracking_event(engine: Engine, event: TrackingEvent) -> None:
    """After a complaint or a hard bounce, check whether its campaign must pause."""
    if event.send_id is None or suppression_reason(event) not in ("complaint", "hard_bounce"):
        return
    with session_scope(engine.db) as session:
        row = session.get(LedgerRow, event.send_id)
        campaign = row.campaign if row is not None else None
    if campaign is not None:
        check_campaign(engine, campaign)
