"""What ``report`` and ``rewards`` add about learning: rewards still waiting for their
attribution window, the policy's value against the control group and a uniform split,
CTR per variant over runs, and CTR by subject and by template."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.campaigns import Campaign
from engine.db import session_scope
from engine.learning import offpolicy
from engine.learning.arms import CONTROL
from engine.learning.champions import champion, champion_policy
from engine.learning.estimators import Z95, Estimate, mean_interval
from engine.learning.logged import from_ledger
from engine.models import LedgerRow, LedgerStatus, RewardRow, as_utc, utcnow
from engine.reports.lift import arm_figures
from engine.reports.variants import VariantReport

if TYPE_CHECKING:
    from engine.app import Engine


@dataclass(frozen=True)
class Waiting:
    """Sent decisions with no reward yet: still inside their window, or ready to join."""

    in_window: int
    ready: int
    next_close: datetime | None


def waiting_rewards(db: SAEngine, campaign: Campaign, now: datetime | None = None) -> Waiting:
    """How many sent decisions of ``campaign`` have no reward yet, and when the next
    attribution window closes (None when none is open)."""
    now = as_utc(now) if now else utcnow()
    cutoff = now - campaign.reward.attribution_window
    base = (
        select(func.count(), func.min(col(LedgerRow.sent_at)))
        .select_from(LedgerRow)
        .outerjoin(RewardRow, col(RewardRow.send_id) == col(LedgerRow.id))
        .where(col(LedgerRow.campaign) == campaign.name)
        .where(col(LedgerRow.status) == LedgerStatus.SENT)
        .where(col(RewardRow.send_id).is_(None))
    )
    with session_scope(db) as session:
        open_count, first = session.execute(base.where(col(LedgerRow.sent_at) > cutoff)).one()
        ready, _ = session.execute(base.where(col(LedgerRow.sent_at) <= cutoff)).one()
    close = as_utc(first) + campaign.reward.attribution_window if first else None
    return Waiting(int(open_count), int(ready), close)


def value_summary(engine: Engine, campaign: Campaign) -> dict[str, Estimate]:
    """Mean reward per decision: as sent, the control group (measured), and the champion
    and a uniform split (DR estimates on the treatment's logged decisions)."""
    decisions = [d for d in from_ledger(engine, campaign.name) if d.arm != CONTROL]
    values: dict[str, Estimate] = {}
    if decisions:
        values["as sent"] = mean_interval_of([d.reward for d in decisions])
        model = offpolicy.RewardModel.fit(decisions)
        uniform = offpolicy.uniform_pmfs(decisions)
        values["uniform split (estimated)"] = offpolicy.estimates(decisions, uniform, model)["dr"]
        shadowed = [d for d in decisions if d.shadow_pmf]
        if shadowed:  # apprentice mode: what the policy would have earned acting
            pmfs = [dict(d.shadow_pmf or {}) for d in shadowed]
            label = "policy in shadow (estimated)"
            values[label] = offpolicy.estimates(shadowed, pmfs, model)["dr"]
        current = champion(engine.db, campaign)
        if current is not None:
            policy = champion_policy(engine.db, engine.policies, campaign)
            pmfs = offpolicy.target_pmfs(policy, decisions)
            label = f"champion {current.version} (estimated)"
            values[label] = offpolicy.estimates(decisions, pmfs, model)["dr"]
    control = arm_figures(engine.db, campaign.name).get(CONTROL)
    if control is not None and control.n:
        half = Z95 * math.sqrt(control.reward_variance() / control.n)
        mean = control.mean_reward
        values["control group (measured)"] = Estimate(mean, mean - half, mean + half, control.n)
    return values


def mean_interval_of(values: Sequence[float]) -> Estimate:
    """The mean of ``values`` with a normal 95% interval."""
    return mean_interval(np.asarray(values, dtype=np.float64))


def ctr_over_runs(db: SAEngine, campaign: str) -> dict[str, list[tuple[datetime, float]]]:
    """Per variant, its CTR in each run (rewarded decisions), at the run's first send."""
    stmt = (
        select(
            col(LedgerRow.run_id),
            col(LedgerRow.variant),
            col(LedgerRow.sent_at),
            col(RewardRow.event_types),
        )
        .join(RewardRow, col(RewardRow.send_id) == col(LedgerRow.id))
        .where(col(LedgerRow.campaign) == campaign)
    )
    sends: dict[tuple[str, str], list[int]] = {}
    starts: dict[str, datetime] = {}
    with session_scope(db) as session:
        for run, variant, sent_at, kinds in session.execute(stmt):
            entry = sends.setdefault((str(run), str(variant)), [0, 0])
            entry[0] += 1
            entry[1] += int("click" in (kinds or []))
            if sent_at is not None:
                starts[run] = min(starts.get(run, as_utc(sent_at)), as_utc(sent_at))
    series: dict[str, list[tuple[datetime, float]]] = {}
    for (run, variant), (n, clicks) in sorted(
        sends.items(), key=lambda kv: starts.get(kv[0][0], utcnow())
    ):
        if run in starts:
            series.setdefault(variant, []).append((starts[run], clicks / n))
    return series


def by_part(rows: Sequence[VariantReport], campaign: Campaign) -> dict[str, list[VariantReport]]:
    """CTR by subject and by template for a campaign listing them separately (empty
    otherwise): each joint variant ``<subject>.<template>`` counts for both parts."""
    if not campaign.subjects:
        return {}
    parts: dict[str, dict[str, list[int]]] = {"subject": {}, "template": {}}
    for row in rows:
        subject, _, template = row.variant.partition(".")
        for kind, key in (("subject", subject), ("template", template)):
            entry = parts[kind].setdefault(key, [0, 0, 0])
            entry[0] += row.sends
            entry[1] += row.clicks
            entry[2] += row.unsubscribes
    return {
        kind: [VariantReport(key, *figures) for key, figures in found.items()]
        for kind, found in parts.items()
    }
