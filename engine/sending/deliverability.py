"""Staying deliverable: a campaign whose complaint or hard-bounce rate passes its threshold
pauses itself, and stays paused until someone resumes it (``tailormail resume``).

The rates are checked when a complaint or a hard bounce is stored (the ``tracking_event``
hook of ``plugins.deliverability``), over the campaign's last ``window`` sends since its
last resume. A run checks the pause before each batch and stops, ``paused``, when it is
set: the recipients not yet mailed are mailed when the run is resumed after the pause.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.db import session_scope, upsert
from engine.models import CampaignPauseRow, EventRow, LedgerRow, LedgerStatus, utcnow
from engine.types import EventType

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

log = logging.getLogger(__name__)

# What counts as a send: the message went to the transport (whatever became of it).
_ATTEMPTED = (LedgerStatus.SENT, LedgerStatus.FAILED, LedgerStatus.UNKNOWN)


@dataclass(frozen=True)
class Rates:
    """Complaints and hard bounces among a campaign's recent sends."""

    sends: int
    complaints: int
    hard_bounces: int

    @property
    def complaint_rate(self) -> float:
        """Complaints per send (0 with no sends)."""
        return self.complaints / self.sends if self.sends else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        """Hard bounces per send (0 with no sends)."""
        return self.hard_bounces / self.sends if self.sends else 0.0


def recent_rates(db: SAEngine, campaign: Campaign, since: datetime | None = None) -> Rates:
    """The rates over ``campaign``'s last ``deliverability.window`` sends after ``since``,
    read from database ``db``."""
    recent = (
        select(col(LedgerRow.id))
        .where(col(LedgerRow.campaign) == campaign.name)
        .where(col(LedgerRow.status).in_(_ATTEMPTED))
        .order_by(col(LedgerRow.id).desc())
        .limit(campaign.deliverability.window)
    )
    if since is not None:
        recent = recent.where(col(LedgerRow.created_at) > since)
    with session_scope(db) as session:
        sends = session.scalar(select(func.count()).select_from(recent.subquery())) or 0
        found = session.execute(
            select(col(EventRow.send_id), col(EventRow.type), col(EventRow.data))
            .where(col(EventRow.send_id).in_(recent))
            .where(col(EventRow.type).in_([EventType.COMPLAINT.value, EventType.BOUNCE.value]))
        ).all()
    complained = {send for send, kind, _ in found if kind == EventType.COMPLAINT.value}
    bounced = {
        send
        for send, kind, data in found
        if kind == EventType.BOUNCE.value and (data or {}).get("bounce_type") == "hard"
    }
    return Rates(int(sends), len(complained), len(bounced))


def active_pause(db: SAEngine, campaign: str) -> CampaignPauseRow | None:
    """The pause holding ``campaign`` back, or None when it may send."""
    with session_scope(db) as session:
        row = session.get(CampaignPauseRow, campaign)
    return row if row is not None and row.resumed_at is None else None


def check_campaign(engine: Engine, name: str) -> CampaignPauseRow | None:
    """Pause campaign ``name`` if a rate is over its threshold; return the pause, if any."""
    campaign = engine.campaigns.get(name)
    if campaign is None:  # events of a campaign removed from the configuration
        return None
    with session_scope(engine.db) as session:
        state = session.get(CampaignPauseRow, name)
    if state is not None and state.resumed_at is None:
        return state
    limits = campaign.deliverability
    rates = recent_rates(engine.db, campaign, since=state.resumed_at if state else None)
    if rates.sends < limits.min_sends:
        return None
    for metric, rate, threshold in (
        ("complaint rate", rates.complaint_rate, limits.max_complaint_rate),
        ("hard-bounce rate", rates.hard_bounce_rate, limits.max_hard_bounce_rate),
    ):
        if rate > threshold:
            return _pause(engine.db, name, metric, rate, threshold, rates.sends)
    return None


def _pause(
    db: SAEngine, name: str, metric: str, rate: float, threshold: float, sends: int
) -> CampaignPauseRow:
    reason = (
        f"{metric} {rate:.2%} over its last {sends} sends is above the threshold of {threshold:.2%}"
    )
    pause = CampaignPauseRow(
        campaign=name, reason=reason, metric=metric, rate=rate, sends=sends, paused_at=utcnow()
    )
    with session_scope(db) as session:
        upsert(session, CampaignPauseRow, [pause.model_dump()], key=["campaign"])
    log.warning(
        "campaign %s paused itself: %s; resume with `tailormail resume %s`", name, reason, name
    )
    return pause


def resume(db: SAEngine, name: str) -> CampaignPauseRow | None:
    """Lift ``name``'s pause (its rates start afresh); return the pause lifted, or None."""
    with session_scope(db) as session:
        row = session.get(CampaignPauseRow, name)
        if row is None or row.resumed_at is not None:
            return None
        row.resumed_at = utcnow()
        session.add(row)
        session.flush()
        session.expunge(row)
    log.info("campaign %s resumed after its pause (%s)", name, row.reason)
    return row
