"""The reward join's rows, written against the mutants of ``engine/feedback/rewards.py`` that
``test_rewards.py`` lets through (``make mutate``)."""

from __future__ import annotations

from datetime import timedelta

from kit.project import Project
from sqlmodel import Session, select

from engine.feedback.rewards import join_campaign
from engine.models import LedgerRow, LedgerStatus, RewardRow, utcnow


def test_each_reward_is_stored_under_its_own_send_id(sqlite_project: Project) -> None:
    # Ledger ids far from 1: a reward stored under any id but its row's shows.
    engine = sqlite_project.engine()
    sent_at = utcnow() - timedelta(hours=3)
    with Session(engine.db) as session:
        session.add_all(
            LedgerRow(
                id=1000 + n,
                run_id="r",
                campaign="alerts",
                recipient_id=f"u{n}",
                email=f"u{n}@example.com",
                decision_id=f"r-u{n}",
                status=LedgerStatus.SENT,
                variant="a",
                sent_at=sent_at,
            )
            for n in range(3)
        )
        session.commit()
    assert sorted(join_campaign(engine, engine.campaign("alerts"))) == [1000, 1001, 1002]
    with Session(engine.db) as session:
        stored = session.exec(select(RewardRow)).all()
    assert sorted((r.send_id, r.campaign, r.reward) for r in stored) == [
        (1000 + n, "alerts", 0.0) for n in range(3)
    ]
