"""What was recorded of the runs, read without the ORM: the newest runs with their ledger
counts, and the campaigns paused now.

``tailormail runs`` only reads, so it should start about as fast as Python imports
SQLAlchemy. Building the SQLModel tables costs more than the rest of the command together
(SQLModel with the ORM ~0.13 s, the 21 table classes ~0.1 s), so this module names the few
columns it reads as SQLAlchemy Core table clauses instead of importing ``engine.models``.
``tests/sending/test_run_history.py`` checks each clause against the table it reads, so
a renamed column fails there rather than here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, column, func, select, table
from sqlalchemy.engine import Engine as SAEngine

from engine.clock import as_utc

RUNS = table(
    "runs",
    column("id", String),
    column("campaign", String),
    column("status", String),
    column("started_at", DateTime),
    column("finished_at", DateTime),
    column("error", String),
    column("shards", Integer),
    column("model_version", String),
)
LEDGER = table(
    "ledger", column("run_id", String), column("status", String), column("owner", String)
)
PAUSES = table(
    "campaign_pauses",
    column("campaign", String),
    column("reason", Text),
    column("paused_at", DateTime),
    column("resumed_at", DateTime),
)
CLAUSES = (RUNS, LEDGER, PAUSES)
"""Every table clause read here (the test compares them with ``engine.models``)."""


@dataclass
class RunInfo:
    """One run with its ledger counts per status."""

    run_id: str
    campaign: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    counts: dict[str, int] = field(default_factory=dict)
    shards: int | None = None  # how many shards workers sent (None: one process)
    workers: int = 0  # how many workers wrote its ledger rows
    model_version: str | None = None  # the model the run decides with ("": a fresh policy)


@dataclass(frozen=True)
class Pause:
    """A campaign paused now (complaint or bounce rate), as ``runs`` shows it."""

    campaign: str
    reason: str
    paused_at: datetime


def list_runs(db: SAEngine, campaign: str | None = None, limit: int = 20) -> list[RunInfo]:
    """The newest runs (of ``campaign``, or of every campaign) in ``db``, newest first."""
    stmt = select(RUNS).order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc())
    if campaign is not None:
        stmt = stmt.where(RUNS.c.campaign == campaign)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    workers: dict[str, int] = {}
    with db.connect() as connection:
        rows = list(connection.execute(stmt.limit(limit)).all())
        ids = [r.id for r in rows]
        if ids:
            grouped = (
                select(LEDGER.c.run_id, LEDGER.c.status, func.count())
                .where(LEDGER.c.run_id.in_(ids))
                .group_by(LEDGER.c.run_id, LEDGER.c.status)
            )
            for run_id, status, n in connection.execute(grouped).all():
                counts[run_id][status] = int(n)
            owners = (
                select(LEDGER.c.run_id, func.count(func.distinct(LEDGER.c.owner)))
                .where(LEDGER.c.run_id.in_(ids))
                .group_by(LEDGER.c.run_id)
            )
            workers = {run_id: int(n) for run_id, n in connection.execute(owners).all()}
    return [
        RunInfo(
            r.id,
            r.campaign,
            r.status,
            as_utc(r.started_at),
            as_utc(r.finished_at) if r.finished_at else None,
            r.error,
            counts[r.id],
            r.shards,
            workers.get(r.id, 0),
            r.model_version,
        )
        for r in rows
    ]


def paused_campaigns(db: SAEngine) -> list[Pause]:
    """Every campaign paused now, oldest pause first."""
    stmt = (
        select(PAUSES.c.campaign, PAUSES.c.reason, PAUSES.c.paused_at)
        .where(PAUSES.c.resumed_at.is_(None))
        .order_by(PAUSES.c.paused_at)
    )
    with db.connect() as connection:
        found = connection.execute(stmt).all()
    return [Pause(name, reason, as_utc(paused_at)) for name, reason, paused_at in found]
