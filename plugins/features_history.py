"""Built-in engagement features: what each recipient of a batch did with past emails.

Two queries per batch, whatever its size: the sends of the last 30 days per recipient,
and the human clicks (link scanners excluded) per recipient, campaign and variant.

- ``sends_30d``: emails sent to the recipient (any campaign) in the last 30 days;
- ``clicks_30d``: of those, how many were clicked;
- ``days_since_last_click``: since the last click on any email (absent if none ever);
- ``engagement``: a namespace with, per variant of this campaign the recipient clicked,
  the number of emails of that variant they clicked (so the policy learns "who clicked
  visual before clicks visual again").

Time is the engine's clock. A campaign turns them off with ``[features] history = false``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlalchemy import select as core_select  # sqlmodel's select takes at most 4 columns
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine import Recipient, hookimpl
from engine.clock import utcnow
from engine.db import session_scope
from engine.models import EventRow, LedgerRow, LedgerStatus, as_utc

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

WINDOW = timedelta(days=30)
_CHUNK = 500  # keeps IN (...) lists below every database's bound-parameter limit


def history_features(
    db: SAEngine, campaign: Campaign, recipient_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The engagement features of ``recipient_ids`` (only those with some history)."""
    now = utcnow()
    since = now - WINDOW
    features: dict[str, dict[str, Any]] = {}
    with session_scope(db) as session:
        for start in range(0, len(recipient_ids), _CHUNK):
            ids = list(recipient_ids[start : start + _CHUNK])
            sends = (
                select(col(LedgerRow.recipient_id), func.count())
                .where(col(LedgerRow.recipient_id).in_(ids))
                .where(col(LedgerRow.status) == LedgerStatus.SENT)
                .where(col(LedgerRow.sent_at) >= since)
                .where(col(LedgerRow.sent_at) <= now)
                .group_by(col(LedgerRow.recipient_id))
            )
            for recipient_id, count in session.execute(sends).all():
                features.setdefault(recipient_id, {})["sends_30d"] = int(count)
            clicked_at = func.min(col(EventRow.timestamp))  # an email's first click
            clicks = (
                core_select(
                    col(LedgerRow.recipient_id),
                    col(LedgerRow.campaign),
                    col(LedgerRow.variant),
                    col(LedgerRow.sent_at),
                    clicked_at,
                )
                .join(EventRow, col(EventRow.send_id) == col(LedgerRow.id))
                .where(col(LedgerRow.recipient_id).in_(ids))
                .where(col(EventRow.type) == "click")
                .where(col(EventRow.bot).is_(False))
                .where(col(EventRow.timestamp) <= now)
                .group_by(col(LedgerRow.id))
            )
            for recipient_id, name, variant, sent_at, first_click in session.execute(clicks):
                _add_click(features.setdefault(recipient_id, {}), campaign, name, variant)
                mine = features[recipient_id]
                days = (now - as_utc(first_click)).total_seconds() / 86400
                mine["days_since_last_click"] = min(mine.get("days_since_last_click", days), days)
                if sent_at is not None and as_utc(sent_at) >= since:
                    mine["clicks_30d"] = mine.get("clicks_30d", 0) + 1
    for mine in features.values():
        if "days_since_last_click" in mine:
            mine["days_since_last_click"] = round(mine["days_since_last_click"], 1)
    return features


def _add_click(mine: dict[str, Any], campaign: Campaign, name: str, variant: str | None) -> None:
    if name == campaign.name and variant:
        engagement = mine.setdefault("engagement", {})
        engagement[variant] = engagement.get(variant, 0) + 1


@hookimpl(trylast=True)
def recipient_features_batch(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, dict[str, Any]] | None:
    """Sends, clicks and clicks per variant of every recipient of the batch (two queries)."""
    if not campaign.features.history or not recipients:
        return None
    return history_features(engine.db, campaign, [r.recipient_id for r in recipients])
