"""Built-in eligibility: suppressed addresses, then the frequency caps.

Two caps: the campaign's own ``frequency_cap`` (at most one email of this campaign per
period) and the settings' ``frequency_cap`` (at most one email of any campaign per
period). ``capped`` answers a whole batch of recipients with one query per cap.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session
from sqlmodel import col, select

from engine import Recipient, hookimpl
from engine.db import session_scope
from engine.durations import format_duration
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


def capped(
    session: Session,
    engine: Engine,
    campaign: Campaign,
    recipient_ids: Collection[str],
    now: datetime | None = None,
) -> dict[str, str]:
    """The recipients of ``recipient_ids`` a frequency cap holds back, with the reason.

    The campaign's cap is checked first (its reason names the campaign), then the cap
    across all campaigns from the settings.
    """
    now = now or utcnow()
    caps = [
        (campaign.frequency_cap, campaign.name, f"{campaign.name}: one email per"),
        (engine.settings.frequency_cap, None, "all campaigns: one email per"),
    ]
    held: dict[str, str] = {}
    for period, only_campaign, label in caps:
        wanted = [r for r in recipient_ids if r not in held]
        if period is None or not wanted:
            continue
        stmt = (
            select(col(LedgerRow.recipient_id))
            .where(col(LedgerRow.recipient_id).in_(wanted))
            .where(col(LedgerRow.status) == LedgerStatus.SENT)
            .where(col(LedgerRow.sent_at) >= now - period)
            .distinct()
        )
        if only_campaign is not None:
            stmt = stmt.where(col(LedgerRow.campaign) == only_campaign)
        reason = f"frequency cap ({label} {format_duration(period)})"
        held.update(dict.fromkeys(session.scalars(stmt).all(), reason))
    return held


@hookimpl(tryfirst=True)
def eligible(engine: Engine, campaign: Campaign, recipient: Recipient) -> str | None:
    """Skip suppressed addresses first (unsubscribes are honoured at once), then the caps.

    An address suppressed for this campaign only is skipped here and mailed by the others.
    """
    with session_scope(engine.db) as session:
        suppression = session.get(SuppressionRow, recipient.email.lower())
        if suppression is not None:
            return f"suppressed ({suppression.reason})"
        # An unsubscribe from this campaign only (the other campaigns still send).
        if session.get(CampaignSuppressionRow, (recipient.email.lower(), campaign.name)):
            return "unsubscribed from this campaign"
        return capped(session, engine, campaign, [recipient.recipient_id]).get(
            recipient.recipient_id
        )
