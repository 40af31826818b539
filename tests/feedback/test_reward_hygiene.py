"""Duplicate and machine-flagged click events change no reward: a reward counts the
distinct human event types of an email, once."""

from __future__ import annotations

from datetime import timedelta

from kit.champion import HUMAN, ledger
from kit.project import Project
from sqlmodel import Session, select

from engine import EventType, TrackingEvent
from engine.feedback.events import record_event, record_events
from engine.feedback.reward_job import join_rewards
from engine.models import RewardRow, utcnow
from engine.sending.real_run import run_campaign


def test_duplicates_and_machine_clicks_change_no_reward(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=5)
    run_campaign(engine, "alerts", run_id="r1")
    once, twice, retried, scanned, machine = ledger(engine, "r1")
    now = utcnow()

    def click(row_id: int | None, **flags: bool) -> TrackingEvent:
        return TrackingEvent(EventType.CLICK, row_id, now, user_agent=HUMAN, url="x", **flags)

    record_event(engine, click(once.id))
    record_event(engine, click(twice.id))  # two clicks on one email: one reward
    record_event(engine, click(twice.id))
    retry = [(click(retried.id), "same-key"), (click(retried.id), "same-key")]
    assert record_events(engine, retry) == 1  # a replayed event is stored once
    assert record_events(engine, retry) == 0
    record_event(engine, click(scanned.id, bot=True))  # a link scanner's click
    record_event(engine, click(machine.id, machine=True))  # flagged by the provider
    join_rewards(engine, now=now + timedelta(hours=2))
    with Session(engine.db) as session:
        rewards = {r.send_id: r.reward for r in session.exec(select(RewardRow)).all()}
    assert rewards == {
        once.id: 1.0,
        twice.id: 1.0,
        retried.id: 1.0,
        scanned.id: 0.0,
        machine.id: 0.0,
    }
    engine.close()
