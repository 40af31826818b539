"""A seeded simulation for the learning-loop tests: people of two segments who click the
variants with known probabilities, sent through the real pipeline, ledger and reward join.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.feedback.events import record_events
from engine.feedback.reward_job import join_rewards
from engine.learning.versions import history
from engine.models import LedgerRow, ModelVersionRow, utcnow
from engine.sending.real_run import run_campaign
from kit.project import TEST_SECRET, Project

HUMAN = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
# Segment a (even people) prefers variant a, segment b (odd people) prefers b; a is the
# better one overall, so a policy that ignores the context picks a for everyone.
CLICKS: Mapping[str, Mapping[str, float]] = {
    "a": {"a": 0.6, "b": 0.1},
    "b": {"a": 0.2, "b": 0.4},
}


def segment(recipient_id: str) -> str:
    """The segment ``Project.write_people`` gives recipient ``u007``."""
    return "ab"[int(recipient_id[1:]) % 2]


def ledger(engine: Engine, run_id: str | None = None) -> list[LedgerRow]:
    """The ledger rows (of one run), oldest first."""
    with Session(engine.db) as session:
        stmt = select(LedgerRow).order_by(col(LedgerRow.id))
        if run_id is not None:
            stmt = stmt.where(col(LedgerRow.run_id) == run_id)
        return list(session.exec(stmt).all())


def simulate_clicks(
    engine: Engine,
    rows: list[LedgerRow],
    rng: random.Random,
    table: Mapping[str, Mapping[str, float]] = CLICKS,
) -> int:
    """Each row's reader clicks with the table's probability; returns the clicks."""
    events = []
    for row in rows:
        if row.variant and rng.random() < table[segment(row.recipient_id)][row.variant]:
            event = TrackingEvent(EventType.CLICK, row.id, utcnow(), user_agent=HUMAN, url="x")
            events.append((event, f"click-{row.id}"))
    return record_events(engine, events) if events else 0


def send_and_reward(
    engine: Engine,
    campaign: str,
    runs: int,
    rng: random.Random,
    *,
    learn: bool = False,
    start: int = 0,
    table: Mapping[str, Mapping[str, float]] = CLICKS,
) -> None:
    """``runs`` runs of ``campaign``, clicked by the simulation, rewarded at once."""
    for index in range(start, start + runs):
        run_id = f"{campaign}-r{index}"
        run_campaign(engine, campaign, run_id=run_id)
        simulate_clicks(engine, ledger(engine, run_id), rng, table)
        join_rewards(engine, campaign=campaign, now=utcnow() + timedelta(hours=2), learn=learn)


def set_policy(path: Path, block: str) -> None:
    """Replace the campaign file's ``[policy]`` table with ``block``."""
    text = path.read_text()
    start = text.index("[policy]")
    end = text.index("[reward]")
    path.write_text(text[:start] + block.strip() + "\n\n" + text[end:])


def versions(engine: Engine, campaign: str) -> list[ModelVersionRow]:
    """The campaign's audit table, oldest first."""
    return history(engine.db, campaign)


def make_project(root: Path, db_url: str) -> Project:
    """A conftest project that the CLI can open too: its tailormail.toml, and the secret
    its engines sign with in the secret file (the CLI refuses to replace a lost one)."""
    project = Project(root, db_url)
    (root / "config" / "tailormail.toml").write_text(
        f'database_url = "{db_url}"\n[delivery]\nbackend = "memory"\n'
    )
    secret = root / ".tailormail-secret"
    secret.write_text(TEST_SECRET + "\n")
    secret.chmod(0o600)
    return project
