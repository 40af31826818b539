"""Built-in frequency caps: a replaceable plugin (disable ``plugins.frequency_caps`` and
register your own ``eligible_batch`` to cap differently).

Two caps: the campaign's own ``frequency_cap`` (at most one email of this campaign per
period) and the settings' ``frequency_cap`` (at most one email of any campaign per
period), both answered by one query per batch. Suppressions and forgotten addresses are
not here: the core checks them, always (``engine.audience.compliance``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import case, func
from sqlalchemy.orm import Session
from sqlmodel import col, select

from engine import Recipient, hookimpl
from engine.db import session_scope
from engine.durations import format_duration
from engine.models import LedgerRow, LedgerStatus, as_utc, utcnow

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
    """Hold back the recipients a frequency cap covers (the core already skipped the
    suppressed and forgotten ones)."""
    with session_scope(engine.db) as session:
        return capped(session, engine, campaign, [r.recipient_id for r in recipients])
