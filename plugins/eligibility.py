"""Built-in eligibility: suppressed addresses and the campaign's frequency cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel import col, select

from engine import Recipient, hookimpl
from engine.db import session_scope
from engine.models import (
    CampaignSuppressionRow,
    LedgerRow,
    LedgerStatus,
    SuppressionRow,
    utcnow,
)

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign


@hookimpl(tryfirst=True)
def eligible(engine: Engine, campaign: Campaign, recipient: Recipient) -> str | None:
    """Skip suppressed addresses first (unsubscribes are honoured at once), then the cap.

    An address suppressed for this campaign only is skipped here and mailed by the others.
    """
    with session_scope(engine.db) as session:
        suppression = session.get(SuppressionRow, recipient.email.lower())
        if suppression is not None:
            return f"suppressed ({suppression.reason})"
        # An unsubscribe from this campaign only (the other campaigns still send).
        if session.get(CampaignSuppressionRow, (recipient.email.lower(), campaign.name)):
            return "unsubscribed from this campaign"
        if campaign.frequency_cap is not None:
            since = utcnow() - campaign.frequency_cap
            recent = session.scalars(
                select(col(LedgerRow.id))
                .where(LedgerRow.recipient_id == recipient.recipient_id)
                .where(LedgerRow.campaign == campaign.name)
                .where(LedgerRow.status == LedgerStatus.SENT)
                .where(col(LedgerRow.sent_at) >= since)
                .limit(1)
            ).first()
            if recent is not None:
                return "frequency cap"
    return None
