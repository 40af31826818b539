"""The reward job's three steps, each alone, and the order the job composes them in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kit.project import Project
from sqlmodel import Session, col, select

import engine.feedback.reward_job as reward_job
from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.feedback.events import record_event
from engine.feedback.rewards import RewardJoinSummary, join_closed_windows
from engine.models import LedgerRow, ModelVersionRow, RewardRow, utcnow
from engine.sending.real_run import run_campaign


def _sent_and_clicked(project: Project) -> Engine:
    project.add_campaign("learning", policy="vw")
    eng: Engine = project.engine()
    project.seed(eng, people=6)
    run_campaign(eng, "learning", run_id="r1")
    with Session(eng.db) as session:
        first = session.exec(select(LedgerRow).order_by(col(LedgerRow.id))).first()
    assert first is not None
    record_event(eng, TrackingEvent(EventType.CLICK, first.id, utcnow(), url="https://x.test/"))
    return eng


def _rewards(eng: Engine) -> list[RewardRow]:
    with Session(eng.db) as session:
        return list(session.exec(select(RewardRow)).all())


def _models(eng: Engine) -> list[ModelVersionRow]:
    with Session(eng.db) as session:
        return list(session.exec(select(ModelVersionRow)).all())


def test_the_join_step_stores_rewards_and_teaches_nobody(sqlite_project: Project) -> None:
    eng = _sent_and_clicked(sqlite_project)
    later = utcnow() + timedelta(hours=2)
    summary = join_closed_windows(eng, ["learning"], later)
    assert summary.rewarded == {"learning": 6} and summary.total_reward == {"learning": 1.0}
    assert summary.replayed == 0 and summary.model_versions == {}
    assert [r.learned_by for r in _rewards(eng)] == [None] * 6  # waiting for the learn step
    assert _models(eng) == []


def test_the_learn_step_feeds_joined_rewards_to_the_policy(sqlite_project: Project) -> None:
    eng = _sent_and_clicked(sqlite_project)
    assert reward_job.learn_from_rewards(eng, ["learning"]) == {}
    join_closed_windows(eng, ["learning"], utcnow() + timedelta(hours=2))
    versions = reward_job.learn_from_rewards(eng, ["learning"])
    assert versions == {"learning": _models(eng)[0].version}
    assert {r.learned_by for r in _rewards(eng)} == {versions["learning"]}
    assert reward_job.learn_from_rewards(eng, ["learning"]) == {}


def test_the_job_replays_then_joins_then_learns(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = sqlite_project.engine()
    steps: list[str] = []

    def replay(engine: object) -> int:
        steps.append("replay")
        return 3

    def join(engine: object, names: list[str], now: object) -> RewardJoinSummary:
        steps.append(f"join {names}")
        return RewardJoinSummary(rewarded=dict.fromkeys(names, 1))

    def learn(engine: object, names: list[str]) -> dict[str, str]:
        steps.append(f"learn {names}")
        return {"alerts": "v1"}

    monkeypatch.setattr(reward_job, "store_orphans", replay)
    monkeypatch.setattr(reward_job, "join_closed_windows", join)
    monkeypatch.setattr(reward_job, "learn_from_rewards", learn)
    summary = reward_job.join_rewards(eng)
    assert steps == ["replay", "join ['alerts']", "learn ['alerts']"]
    assert (summary.replayed, summary.rewarded, summary.model_versions) == (
        3,
        {"alerts": 1},
        {"alerts": "v1"},
    )
    steps.clear()
    assert reward_job.join_rewards(eng, campaign="alerts", learn=False).model_versions == {}
    assert steps == ["replay", "join ['alerts']"]
