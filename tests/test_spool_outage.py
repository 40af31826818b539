"""A click taken while the database is down survives every replay attempt made before the
database is back, and is then stored exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
from conftest import Project
from sqlalchemy import text
from sqlmodel import Session, select

from engine.app import Engine
from engine.models import EventRow, RewardRow, utcnow
from engine.rewards import join_rewards

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"


@contextmanager
def events_table_down(engine: Engine) -> Iterator[None]:
    """Every insert into the events table fails until the block ends."""
    with engine.db.begin() as conn:
        conn.execute(text("ALTER TABLE events RENAME TO events_away"))
    try:
        yield
    finally:
        with engine.db.begin() as conn:
            conn.execute(text("ALTER TABLE events_away RENAME TO events"))


def stored_clicks(engine: Engine) -> list[EventRow]:
    with Session(engine.db) as session:
        return list(session.exec(select(EventRow)).all())


def test_a_spooled_click_survives_replays_while_the_database_is_still_down(
    sqlite_project: Project,
) -> None:
    with sqlite_project.sent_through_a_server(people=3) as (engine, base_url):
        message = engine.memory_outbox[0]  # type: ignore[attr-defined]
        link = next(u for u in message.html.split('"') if u.startswith(f"{base_url}/c/"))
        with events_table_down(engine):
            answer = httpx.get(link, headers={"User-Agent": BROWSER}, follow_redirects=False)
            assert answer.status_code == 302
            assert engine.spool.pending() == 1
            for _ in range(2):  # the reward job's replay runs, and the database is still down
                assert engine.spool.replay(engine) == 0
                assert engine.spool.pending() == 1
    assert stored_clicks(engine) == []

    summary = join_rewards(engine, now=utcnow() + timedelta(hours=2))
    assert (summary.replayed, engine.spool.pending()) == (1, 0)
    (click,) = stored_clicks(engine)
    assert (click.type, click.send_id, click.user_agent) == ("click", message.send_id, BROWSER)
    with Session(engine.db) as session:
        rewards = {r.send_id: r.reward for r in session.exec(select(RewardRow)).all()}
    assert rewards[message.send_id] == 1.0 and sum(rewards.values()) == 1.0
    assert engine.spool.replay(engine) == 0 and len(stored_clicks(engine)) == 1
