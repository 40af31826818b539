"""Per-variant campaign report: sends, human clicks, CTR with a 95% Wilson interval."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import distinct, func
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.db import session_scope
from engine.models import EventRow, LedgerRow, LedgerStatus
from engine.types import EventType

if TYPE_CHECKING:
    from engine.app import Engine

Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval: sane at 0 and at small n, unlike the normal one."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class VariantReport:
    """One variant's figures."""

    variant: str
    sends: int
    clicks: int
    unsubscribes: int

    @property
    def ctr(self) -> float:
        """Click-through rate: emails with at least one human click per email sent."""
        return self.clicks / self.sends if self.sends else 0.0

    @property
    def ctr_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the CTR."""
        return wilson_interval(self.clicks, self.sends)


def _count_events(db: SAEngine, campaign: str, kind: EventType) -> dict[str, int]:
    stmt = (
        select(col(LedgerRow.variant), func.count(distinct(col(EventRow.send_id))))
        .join(EventRow, col(EventRow.send_id) == col(LedgerRow.id))
        .where(LedgerRow.campaign == campaign)
        .where(EventRow.type == kind.value)
        .where(col(EventRow.bot).is_(False))
        .group_by(LedgerRow.variant)
    )
    with session_scope(db) as session:
        return {str(v): int(n) for v, n in session.execute(stmt).all()}


def campaign_report(engine: Engine, campaign: str) -> list[VariantReport]:
    """Figures per variant of ``campaign`` over all its runs, in configured variant order."""
    config = engine.campaign(campaign)
    stmt = (
        select(col(LedgerRow.variant), func.count())
        .where(LedgerRow.campaign == campaign)
        .where(LedgerRow.status == LedgerStatus.SENT)
        .group_by(LedgerRow.variant)
    )
    with session_scope(engine.db) as session:
        sends = {str(v): int(n) for v, n in session.execute(stmt).all()}
    clicks = _count_events(engine.db, campaign, EventType.CLICK)
    unsubscribes = _count_events(engine.db, campaign, EventType.UNSUBSCRIBE)
    keys = [v.key for v in config.variants] + sorted(set(sends) - {v.key for v in config.variants})
    return [
        VariantReport(key, sends.get(key, 0), clicks.get(key, 0), unsubscribes.get(key, 0))
        for key in keys
    ]
