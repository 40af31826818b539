"""The engine reads the time from one clock: a simulated one drives sends, caps and rewards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kit.project import Project
from sqlmodel import Session, select

from engine import EventType, TrackingEvent
from engine.clock import SimulatedClock, use_clock, utcnow
from engine.feedback.events import record_event
from engine.feedback.reward_job import join_rewards
from engine.models import LedgerRow, LedgerStatus, RewardRow
from engine.sending.real_run import run_campaign

START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def test_simulated_clock_moves_only_forward() -> None:
    clock = SimulatedClock(START)
    assert clock() == START
    assert clock.advance(timedelta(days=2)) == START + timedelta(days=2)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="backwards"):
        clock.set(START)
    with pytest.raises(ValueError, match="aware"):
        SimulatedClock(datetime(2030, 1, 1))  # noqa: DTZ001 - naive on purpose


def test_use_clock_is_scoped() -> None:
    clock = SimulatedClock(START)
    with use_clock(clock):
        assert utcnow() == START
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(minutes=1)


def test_days_of_sends_run_on_a_simulated_clock(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("daily", extra='frequency_cap = "20h"')
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=6)
    clock = SimulatedClock(START)
    with use_clock(clock):
        first = run_campaign(engine, "daily", run_id="day-1")
        assert first.sent == 6
        # The same simulated day: the 20-hour cap holds everyone back.
        clock.advance(timedelta(hours=3))
        assert run_campaign(engine, "daily", run_id="day-1b").skipped == 6
        with Session(engine.db) as session:
            rows = session.exec(select(LedgerRow).where(LedgerRow.run_id == "day-1")).all()
        assert {row.sent_at for row in rows} == {START}
        row = rows[0]
        click_at = START + timedelta(minutes=30)
        record_event(engine, TrackingEvent(EventType.CLICK, row.id, click_at, url="x"))
        # The campaign's window is 1 hour: 3 simulated hours later it has closed.
        joined = join_rewards(engine, campaign="daily")
        assert joined.rewarded == {"daily": 6}
        clock.advance(timedelta(days=1))
        assert run_campaign(engine, "daily", run_id="day-2").sent == 6
    with Session(engine.db) as session:
        rewards = {r.send_id: r for r in session.exec(select(RewardRow)).all()}
        statuses = session.exec(select(LedgerRow.status)).all()
    assert rewards[row.id].reward == 1.0  # type: ignore[index]
    assert {r.computed_at for r in rewards.values()} == {START + timedelta(hours=3)}
    assert statuses.count(LedgerStatus.SENT) == 12
