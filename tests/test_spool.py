"""No lost clicks: an event the database cannot take is spooled and replayed later."""

from __future__ import annotations

from datetime import timedelta

import httpx
from conftest import Project
from sqlalchemy import text
from sqlmodel import Session, select

from engine.models import EventRow, RewardRow, utcnow
from engine.pipeline import run_campaign
from engine.rewards import join_rewards
from engine.web import BackgroundServer

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"


def test_a_click_during_a_database_failure_is_spooled_then_replayed(project: Project) -> None:
    with BackgroundServer(project.engine()) as server:
        engine = project.engine(tracking_base_url=server.url)
        project.seed(engine, people=3)
        run_campaign(engine, "alerts", run_id="r1")
        message = engine.memory_outbox[0]
        link = next(u for u in message.html.split('"') if u.startswith(f"{server.url}/c/"))
        with engine.db.begin() as conn:  # the events table is gone: every insert fails
            conn.execute(text("ALTER TABLE events RENAME TO events_away"))
        try:
            answer = httpx.get(link, headers={"User-Agent": BROWSER}, follow_redirects=False)
        finally:
            with engine.db.begin() as conn:
                conn.execute(text("ALTER TABLE events_away RENAME TO events"))
    assert answer.status_code == 302  # the reader got their page all the same
    assert engine.spool.pending() == 1
    with Session(engine.db) as session:
        assert session.exec(select(EventRow)).all() == []

    summary = join_rewards(engine, now=utcnow() + timedelta(hours=2))
    assert summary.replayed == 1 and engine.spool.pending() == 0
    with Session(engine.db) as session:
        (click,) = session.exec(select(EventRow)).all()
        rewards = {r.send_id: r.reward for r in session.exec(select(RewardRow)).all()}
    assert (click.type, click.send_id, click.user_agent) == ("click", message.send_id, BROWSER)
    assert rewards[message.send_id] == 1.0 and sum(rewards.values()) == 1.0
    assert join_rewards(engine).replayed == 0
