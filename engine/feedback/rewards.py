"""Rewards: join events to ledger rows once the attribution window has closed.

A decision with no attributed event gets the campaign's default reward: silence is data.
Each reward is stored once (the send id is its key); the reward job
(``engine.feedback.reward_job``) then feeds it to the campaign's policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.campaigns import Campaign
from engine.db import insert_returning, session_scope
from engine.feedback.events import events_for
from engine.models import LedgerRow, LedgerStatus, RewardRow, as_utc, utcnow

if TYPE_CHECKING:
    from engine.app import Engine

CHUNK = 2000


@dataclass
class RewardJoinSummary:
    """One pass of the reward job: records replayed, then rewards and new model versions
    per campaign."""

    replayed: int = 0
    rewarded: dict[str, int] = field(default_factory=dict)
    total_reward: dict[str, float] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)


def _closed_rows(db: SAEngine, campaign: Campaign, now: datetime) -> list[Any]:
    """Sent rows (id, sent_at) whose window closed before ``now`` and have no reward."""
    cutoff = now - campaign.reward.attribution_window
    stmt = (
        select(col(LedgerRow.id), col(LedgerRow.sent_at))
        .outerjoin(RewardRow, col(RewardRow.send_id) == col(LedgerRow.id))
        .where(col(LedgerRow.campaign) == campaign.name)
        .where(col(LedgerRow.status) == LedgerStatus.SENT)
        .where(col(LedgerRow.sent_at) <= cutoff)
        .where(col(RewardRow.send_id).is_(None))
        .order_by(col(LedgerRow.id))
        .limit(CHUNK)
    )
    with session_scope(db) as session:
        return list(session.execute(stmt).all())


def join_campaign(engine: Engine, campaign: Campaign, now: datetime | None = None) -> list[int]:
    """Reward every closed decision of ``campaign``; return the send ids rewarded now."""
    now = as_utc(now) if now else utcnow()
    rewarded: list[int] = []
    while rows := _closed_rows(engine.db, campaign, now):
        events = events_for(engine.db, [r.id for r in rows if r.id is not None])
        values: list[dict[str, Any]] = []
        for row in rows:
            assert row.id is not None and row.sent_at is not None
            window_end = as_utc(row.sent_at) + campaign.reward.attribution_window
            attributed = [e for e in events.get(row.id, []) if as_utc(e.timestamp) <= window_end]
            value = engine.pm.hook.reward(engine=engine, campaign=campaign, events=attributed)
            values.append(
                {
                    "send_id": row.id,
                    "campaign": campaign.name,
                    "reward": float(value if value is not None else campaign.reward.default),
                    "event_types": sorted({e.type.value for e in attributed}),
                    "computed_at": utcnow(),
                }
            )
        with session_scope(engine.db) as session:
            landed = insert_returning(session, RewardRow, values, "send_id")
        rewarded += [int(send_id) for (send_id,) in landed]
        if len(rows) < CHUNK:
            break
    return rewarded


def join_closed_windows(
    engine: Engine, names: Sequence[str], now: datetime | None = None
) -> RewardJoinSummary:
    """Join the closed windows of each campaign in ``names``: what was rewarded, and how much."""
    summary = RewardJoinSummary()
    for name in names:
        ids = join_campaign(engine, engine.campaign(name), now)
        summary.rewarded[name] = len(ids)
        if ids:
            summary.total_reward[name] = _total_reward(engine.db, ids)
    return summary


def _total_reward(db: SAEngine, send_ids: Sequence[int]) -> float:
    """The sum of the stored rewards of ``send_ids``."""
    with session_scope(db) as session:
        stmt = select(col(RewardRow.reward)).where(col(RewardRow.send_id).in_(send_ids))
        return float(sum(session.scalars(stmt).all()))
