"""Built-in eligibility: suppressed addresses, then the frequency caps.

Two caps: the campaign's own ``frequency_cap`` (at most one email of this campaign per
period) and the settings' ``frequency_cap`` (at most one email of any campaign per
period). A batch of recipients costs one query for both suppression tables and one for
both caps.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import case, func, literal, union_all
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
    as_utc,
    utcnow,
)

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign


def suppressed(session: Session, campaign: Campaign, emails: Collection[str]) -> dict[str, str]:
    """The lower-cased ``emails`` that must not get ``campaign``, with the reason.

    An address suppressed everywhere wins over an unsubscribe from this campaign only.
    """
    if not emails:
        return {}
    wanted = sorted(emails)
    everywhere = select(
        col(SuppressionRow.email), col(SuppressionRow.reason), literal(False)
    ).where(col(SuppressionRow.email).in_(wanted))
    this_campaign = (
        select(col(CampaignSuppressionRow.email), literal(""), literal(True))
        .where(col(CampaignSuppressionRow.email).in_(wanted))
        .where(col(CampaignSuppressionRow.campaign) == campaign.name)
    )
    reasons: dict[str, str] = {}
    for email, reason, campaign_only in session.execute(union_all(everywhere, this_campaign)):
        if campaign_only:
            reasons.setdefault(email, "unsubscribed from this campaign")
        else:
            reasons[email] = f"suppressed ({reason})"
    return reasons


def capped(
    session: Session,
    engine: Engine,
    campaign: Campaign,
    recipient_ids: Collection[str],
    now: datetime | None = None,
) -> dict[str, str]:
    """The recipients of ``recipient_ids`` a frequency cap holds back, with the reason.

    One query answers both caps: the campaign's cap is checked first (its reason names
    the campaign), then the cap across all campaigns from the settings.
    """
    own, everyone = campaign.frequency_cap, engine.settings.frequency_cap
    periods = [p for p in (own, everyone) if p is not None]
    if not periods or not recipient_ids:
        return {}
    now = now or utcnow()
    own_since = now - (own or timedelta(0))
    stmt = (
        select(
            col(LedgerRow.recipient_id),
            func.max(case((col(LedgerRow.campaign) == campaign.name, col(LedgerRow.sent_at)))),
            func.max(col(LedgerRow.sent_at)),
        )
        .where(col(LedgerRow.recipient_id).in_(sorted(recipient_ids)))
        .where(col(LedgerRow.status) == LedgerStatus.SENT)
        .where(col(LedgerRow.sent_at) >= now - max(periods))
        .group_by(col(LedgerRow.recipient_id))
    )
    held: dict[str, str] = {}
    for recipient_id, own_last, any_last in session.execute(stmt).all():
        if own is not None and own_last is not None and as_utc(own_last) >= own_since:
            held[recipient_id] = _reason(f"{campaign.name}: one email per", own)
        elif everyone is not None and as_utc(any_last) >= now - everyone:
            held[recipient_id] = _reason("all campaigns: one email per", everyone)
    return held


def _reason(label: str, period: timedelta) -> str:
    return f"frequency cap ({label} {format_duration(period)})"


@hookimpl(tryfirst=True)
def eligible_batch(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, str]:
    """Skip suppressed addresses first (unsubscribes are honoured at once), then the caps.

    An address suppressed for this campaign only is skipped here and mailed by the others.
    """
    emails = {r.recipient_id: r.email.lower() for r in recipients}
    with session_scope(engine.db) as session:
        blocked = suppressed(session, campaign, set(emails.values()))
        reasons = {rid: blocked[email] for rid, email in emails.items() if email in blocked}
        rest = [rid for rid in emails if rid not in reasons]
        reasons.update(capped(session, engine, campaign, rest))
    return reasons
