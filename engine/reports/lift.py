"""Measured lift: the treatment arm against the held-out control group, with intervals.

Only rewarded decisions count (their attribution window has closed), so both arms are
measured over the same kind of data. The CTR difference has Newcombe's hybrid Wilson
interval (method 10), sane at low rates and small groups; the mean reward difference has a
normal (Welch) interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.db import session_scope
from engine.learning.arms import CONTROL, TREATMENT
from engine.learning.estimators import Z95, Estimate
from engine.models import LedgerRow, RewardRow
from engine.reports.variants import wilson_interval

if TYPE_CHECKING:
    from engine.app import Engine


@dataclass
class ArmFigures:
    """One arm's rewarded decisions: how many, how many were clicked, reward moments."""

    n: int = 0
    clicks: int = 0
    reward_sum: float = 0.0
    reward_squares: float = 0.0

    @property
    def ctr(self) -> float:
        """Clicked decisions per decision."""
        return self.clicks / self.n if self.n else 0.0

    @property
    def mean_reward(self) -> float:
        """The mean reward per decision."""
        return self.reward_sum / self.n if self.n else 0.0

    def reward_variance(self) -> float:
        """The sample variance of the reward."""
        if self.n < 2:
            return math.inf
        return max(0.0, (self.reward_squares - self.n * self.mean_reward**2) / (self.n - 1))


@dataclass(frozen=True)
class Lift:
    """Treatment minus control: CTR (with Newcombe's interval) and mean reward."""

    treatment: ArmFigures
    control: ArmFigures
    ctr: Estimate
    reward: Estimate

    @property
    def relative(self) -> float | None:
        """The CTR lift relative to the control's CTR (None when the control has none)."""
        return self.ctr.value / self.control.ctr if self.control.ctr else None


def arm_figures(db: SAEngine, campaign: str) -> dict[str, ArmFigures]:
    """Figures per arm over the campaign's rewarded decisions that have an arm."""
    stmt = (
        select(col(LedgerRow.arm), col(RewardRow.reward), col(RewardRow.event_types))
        .join(RewardRow, col(RewardRow.send_id) == col(LedgerRow.id))
        .where(col(LedgerRow.campaign) == campaign)
        .where(col(LedgerRow.arm).is_not(None))
    )
    figures: dict[str, ArmFigures] = {}
    with session_scope(db) as session:
        for arm, reward, kinds in session.execute(stmt):
            entry = figures.setdefault(str(arm), ArmFigures())
            entry.n += 1
            entry.clicks += int("click" in (kinds or []))
            entry.reward_sum += float(reward)
            entry.reward_squares += float(reward) ** 2
    return figures


def newcombe(treated: ArmFigures, control: ArmFigures) -> Estimate:
    """The CTR difference with Newcombe's hybrid score interval."""
    p1, p2 = treated.ctr, control.ctr
    l1, u1 = wilson_interval(treated.clicks, treated.n)
    l2, u2 = wilson_interval(control.clicks, control.n)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Estimate(diff, low, high, treated.n + control.n)


def measured_lift(engine: Engine, campaign: str) -> Lift | None:
    """The lift of the treatment over the control, or None without both arms rewarded."""
    arms = arm_figures(engine.db, campaign)
    treated, control = arms.get(TREATMENT), arms.get(CONTROL)
    if treated is None or control is None:
        return None
    diff = treated.mean_reward - control.mean_reward
    stderr = math.sqrt(
        treated.reward_variance() / treated.n + control.reward_variance() / control.n
    )
    reward = Estimate(diff, diff - Z95 * stderr, diff + Z95 * stderr, treated.n + control.n)
    return Lift(treated, control, newcombe(treated, control), reward)
