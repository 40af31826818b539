"""``tailormail runs`` reads the runs through Core table clauses, not the ORM: the clauses
name real columns of the tables, and what they read matches what the tables hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Integer, String
from sqlmodel import SQLModel

from engine.db import make_db, session_scope
from engine.models import CampaignPauseRow, LedgerRow, LedgerStatus, RunRow
from engine.sending.run_history import CLAUSES, list_runs, paused_campaigns


def test_every_clause_names_columns_of_its_table_with_a_matching_type() -> None:
    for clause in CLAUSES:
        real = SQLModel.metadata.tables[clause.name]
        for column in clause.c:
            assert column.name in real.c, f"{clause.name}.{column.name} is not a column"
            kind = real.c[column.name].type
            stored = getattr(kind, "impl_instance", kind)  # SQLModel's types decorate these
            assert isinstance(column.type, DateTime | Integer | String)
            assert stored._type_affinity is column.type._type_affinity, (clause, column.name)


def test_runs_and_pauses_read_as_the_tables_hold_them(db_url: str) -> None:
    db = make_db(db_url)
    started = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    rows = [
        RunRow(id="alerts@1", campaign="alerts", started_at=started, status="done", shards=2),
        RunRow(
            id="alerts@2",
            campaign="alerts",
            started_at=started + timedelta(days=1),
            finished_at=started + timedelta(days=1, minutes=3),
            status="failed",
            error="the SMTP server refused the login",
            model_version="v3",
        ),
        RunRow(id="digest@1", campaign="digest", started_at=started + timedelta(hours=1)),
    ]
    ledger = [
        LedgerRow(
            run_id="alerts@1",
            campaign="alerts",
            recipient_id=f"r{n}",
            email=f"r{n}@example.com",
            decision_id=f"d{n}",
            status=LedgerStatus.SENT if n < 3 else LedgerStatus.SKIPPED,
            owner=f"host/w{n % 2}",
        )
        for n in range(5)
    ]
    pauses = [
        CampaignPauseRow(
            campaign="alerts", reason="complaint rate 0.2 > 0.1", metric="complaint rate",
            rate=0.2, sends=10, paused_at=started,
        ),
        CampaignPauseRow(
            campaign="digest", reason="bounce rate 0.3 > 0.1", metric="hard-bounce rate",
            rate=0.3, sends=10, paused_at=started, resumed_at=started + timedelta(hours=2),
        ),
    ]  # fmt: skip
    with session_scope(db) as session:
        session.add_all([*rows, *ledger, *pauses])

    found = list_runs(db)
    assert [r.run_id for r in found] == ["alerts@2", "digest@1", "alerts@1"]
    newest, _, first = found
    assert newest.started_at == started + timedelta(days=1)
    assert newest.finished_at == started + timedelta(days=1, minutes=3)
    assert newest.started_at.tzinfo is not None and newest.finished_at is not None
    assert (newest.status, newest.error, newest.model_version) == (
        "failed",
        "the SMTP server refused the login",
        "v3",
    )
    assert newest.counts == {} and newest.workers == 0
    assert first.counts == {"sent": 3, "skipped": 2} and (first.workers, first.shards) == (2, 2)
    assert [r.run_id for r in list_runs(db, "alerts", limit=1)] == ["alerts@2"]

    (pause,) = paused_campaigns(db)  # digest was resumed
    assert (pause.campaign, pause.reason, pause.paused_at) == (
        "alerts",
        "complaint rate 0.2 > 0.1",
        started,
    )
    db.dispose()
