"""The learning loop as a campaign sees it: rewards inside the window, a model that learns
from them, and a next run whose decisions come from that model.

Each test is written against what a user can observe (ledger rows, stored rewards, stored
models, the pmf the next run logs), so it holds whichever module does the work.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from kit.project import Project
from sqlmodel import Session, col, select

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.feedback.events import record_event
from engine.feedback.reward_job import join_rewards
from engine.models import LedgerRow, ModelVersionRow, RewardRow, as_utc, utcnow
from engine.sending.real_run import run_campaign

WINDOW = timedelta(hours=1)  # the conftest campaign's attribution window


def ledger(engine: Engine, run_id: str) -> list[LedgerRow]:
    with Session(engine.db) as session:
        stmt = select(LedgerRow).where(col(LedgerRow.run_id) == run_id).order_by(LedgerRow.id)
        return list(session.exec(stmt).all())


def rewards(engine: Engine) -> dict[int, float]:
    with Session(engine.db) as session:
        return {r.send_id: r.reward for r in session.exec(select(RewardRow)).all()}


def champion_blob(engine: Engine, campaign: str) -> tuple[str, bytes]:
    """The version label and saved model of the campaign's current champion."""
    with Session(engine.db) as session:
        stmt = (
            select(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign)
            .where(col(ModelVersionRow.role) == "champion")
        )
        (row,) = session.exec(stmt).all()
    return row.version, row.blob


def click(engine: Engine, row: LedgerRow, at: Any = None) -> None:
    human = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
    event = TrackingEvent(EventType.CLICK, row.id, at or utcnow(), user_agent=human)
    record_event(engine, event)


def test_the_reward_join_teaches_the_policy_and_the_next_run_decides_with_it(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("learning", policy="vw")
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=30)
    run_campaign(engine, "learning", run_id="r1")
    first = ledger(engine, "r1")
    assert {r.variant for r in first} == {"a", "b"}  # exploration offered both
    for row in first:  # every reader clicks variant b, nobody clicks a
        if row.variant == "b":
            click(engine, row)
    summary = join_rewards(engine, campaign="learning", now=utcnow() + 2 * WINDOW)
    assert summary.rewarded == {"learning": 30}
    version, blob = champion_blob(engine, "learning")
    assert summary.model_versions == {"learning": version}

    # The stored model learned: for the same contexts it predicts differently from an
    # untrained policy, and it prefers b.
    campaign = engine.campaign("learning")
    fresh = engine.policies.get("vw")(**campaign.policy.params)
    trained = engine.policies.get("vw")(**campaign.policy.params)
    trained.load(blob)
    variants = campaign.variant_list
    before = [fresh.choose(r.context or {}, variants, seed=1).pmf for r in first]
    after = [trained.choose(r.context or {}, variants, seed=1).pmf for r in first]
    assert after != before
    assert all(pmf["b"] > pmf["a"] for pmf in after), after

    # The next run's logged pmfs are exactly that model's predictions, under its label.
    run_campaign(engine, "learning", run_id="r2")
    second = ledger(engine, "r2")
    assert {r.model_version for r in second} == {version}
    for row in second:
        expected = trained.choose(row.context or {}, variants, seed=1).pmf
        assert row.pmf == pytest.approx(expected), row.recipient_id
    assert [r.pmf for r in second] != [r.pmf for r in first]
    assert sum(r.variant == "b" for r in second) > sum(r.variant == "b" for r in first)


def test_the_attribution_window_ends_exactly_where_configured(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=5)
    run_campaign(engine, "alerts", run_id="r1")
    rows = ledger(engine, "r1")
    assert all(r.sent_at is not None for r in rows)
    end = {r.id: as_utc(r.sent_at) + WINDOW for r in rows if r.sent_at is not None}
    early, at_end, late, ignored, unclicked = rows
    click(engine, early, end[early.id] - timedelta(seconds=1))
    click(engine, at_end, end[at_end.id])
    click(engine, late, end[late.id] + timedelta(seconds=1))
    # A late click does not spoil an earlier one on the same email.
    click(engine, ignored, end[ignored.id] + timedelta(seconds=1))
    click(engine, ignored, end[ignored.id] - timedelta(minutes=30))

    join_rewards(engine, now=max(end.values()) + timedelta(hours=1))
    values = rewards(engine)
    assert values == {
        early.id: 1.0,
        at_end.id: 1.0,
        late.id: 0.0,
        ignored.id: 1.0,
        unclicked.id: 0.0,
    }
    with Session(engine.db) as session:
        kinds = {r.send_id: r.event_types for r in session.exec(select(RewardRow)).all()}
    assert kinds[late.id] == [] and kinds[early.id] == ["click"]


def test_a_row_is_rewarded_only_once_its_own_window_has_closed(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=3)
    run_campaign(engine, "alerts", run_id="r1")
    rows = ledger(engine, "r1")
    ends = sorted(as_utc(r.sent_at) + WINDOW for r in rows if r.sent_at is not None)
    assert join_rewards(engine, now=ends[0] - timedelta(seconds=1)).rewarded == {"alerts": 0}
    assert join_rewards(engine, now=ends[-1]).rewarded == {"alerts": 3}
    assert join_rewards(engine, now=ends[-1] + WINDOW).rewarded == {"alerts": 0}  # once only
