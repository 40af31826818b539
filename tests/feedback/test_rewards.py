"""Rewards: joined once the attribution window closes; the policy learns; models are stored."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kit.project import Project
from sqlmodel import Session, select

import engine.feedback.rewards
from engine import EventType, TrackingEvent, hookimpl
from engine.app import Engine
from engine.feedback.events import record_event
from engine.feedback.reward_job import join_rewards
from engine.models import LedgerRow, ModelVersionRow, RewardRow, utcnow
from engine.sending.real_run import run_campaign


def sent_rows(engine: object) -> list[LedgerRow]:
    with Session(engine.db) as session:  # type: ignore[attr-defined]
        return list(session.exec(select(LedgerRow).order_by(LedgerRow.id)).all())


def click(engine: object, row: LedgerRow, *, bot: bool = False) -> None:
    record_event(
        engine,  # type: ignore[arg-type]
        TrackingEvent(EventType.CLICK, row.id, utcnow(), url=(row.links or ["x"])[0], bot=bot),
    )


def rewards(engine: object) -> dict[int, float]:
    with Session(engine.db) as session:  # type: ignore[attr-defined]
        return {r.send_id: r.reward for r in session.exec(select(RewardRow)).all()}


def test_rewards_wait_for_the_window_then_default_to_no_click(project: Project) -> None:
    project.add_campaign("learning", policy="vw")
    engine = project.engine()
    project.seed(engine, people=10)
    run_campaign(engine, "learning", run_id="r1")
    rows = sent_rows(engine)
    click(engine, rows[0])
    click(engine, rows[0])  # a second click on the same email is worth no more
    click(engine, rows[1], bot=True)  # a link scanner is not a person
    assert join_rewards(engine, campaign="learning").rewarded == {"learning": 0}  # window open
    later = utcnow() + timedelta(hours=2)
    summary = join_rewards(engine, campaign="learning", now=later)
    assert summary.rewarded == {"learning": 10}
    assert summary.total_reward == {"learning": 1.0} and summary.replayed == 0
    values = rewards(engine)
    assert values[rows[0].id] == 1.0  # type: ignore[index]
    assert values[rows[1].id] == 0.0  # type: ignore[index]
    assert sum(values.values()) == 1.0
    version = summary.model_versions["learning"]
    with Session(engine.db) as session:
        models = session.exec(select(ModelVersionRow)).all()
    assert [(m.version, m.role, m.n_feedback) for m in models] == [(version, "champion", 10)]
    # The next run's decisions name the model they were made with.
    run_campaign(engine, "learning", run_id="r2")
    assert {r.model_version for r in sent_rows(engine) if r.run_id == "r2"} == {version}
    # Joining again before r2's window closes finds nothing new and stores no model.
    again = join_rewards(engine, campaign="learning")
    assert again.rewarded == {"learning": 0} and again.model_versions == {}


def test_unsubscribe_is_a_negative_reward(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=3)
    run_campaign(engine, "alerts", run_id="r1")
    row = sent_rows(engine)[0]
    record_event(engine, TrackingEvent(EventType.UNSUBSCRIBE, row.id, utcnow()))
    join_rewards(engine, now=utcnow() + timedelta(hours=2))
    assert rewards(engine)[row.id] == -1.0  # type: ignore[index]


class DoubleClicks:
    """A custom reward function: clicks are worth 2, silence -0.1."""

    @staticmethod
    @hookimpl
    def reward(engine, campaign, events):  # type: ignore[no-untyped-def]
        return 2.0 if any(e.type == EventType.CLICK for e in events) else -0.1


def test_a_reward_plugin_replaces_the_default_function(sqlite_project: Project) -> None:
    engine = sqlite_project.engine(plugins=[DoubleClicks()])
    sqlite_project.seed(engine, people=4)
    run_campaign(engine, "alerts", run_id="r1")
    rows = sent_rows(engine)
    click(engine, rows[2])
    join_rewards(engine, now=utcnow() + timedelta(hours=2))
    values = rewards(engine)
    assert values[rows[2].id] == 2.0  # type: ignore[index]
    assert sorted(values.values()) == [-0.1, -0.1, -0.1, 2.0]


def test_rewards_are_joined_in_chunks_each_row_once(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.feedback.rewards, "CHUNK", 2)  # five rows: three chunks
    eng = sqlite_project.engine()
    sqlite_project.seed(eng, people=5)
    run_campaign(eng, "alerts", run_id="r1")
    later = utcnow() + timedelta(hours=2)
    assert join_rewards(eng, now=later, learn=False).rewarded == {"alerts": 5}
    assert sorted(rewards(eng)) == [r.id for r in sent_rows(eng)]
    assert join_rewards(eng, now=later, learn=False).rewarded == {"alerts": 0}


class EngineAware:
    """A reward function that reads the engine it is given (its settings, say)."""

    @staticmethod
    @hookimpl
    def reward(engine, campaign, events):  # type: ignore[no-untyped-def]
        assert isinstance(engine, Engine)
        return 0.5 if engine.settings.from_address and campaign.name == "alerts" else None


def test_the_reward_hook_gets_the_engine_and_the_campaign(sqlite_project: Project) -> None:
    eng = sqlite_project.engine(plugins=[EngineAware()])
    sqlite_project.seed(eng, people=2)
    run_campaign(eng, "alerts", run_id="r1")
    join_rewards(eng, now=utcnow() + timedelta(hours=2), learn=False)
    assert sorted(rewards(eng).values()) == [0.5, 0.5]
