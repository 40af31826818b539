"""A large batch of ledger rows reaches PostgreSQL by ``COPY`` (``engine.copy_rows``):
every value as the multi-row ``INSERT`` would store it, collisions skipped, and exactly
the rows that landed returned, which is how a worker knows which rows it holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from kit.project import Project
from sqlalchemy import create_engine, select
from sqlmodel import Session

from engine import copy_rows
from engine.db import insert_returning
from engine.models import LedgerRow
from engine.sending.real_run import run_campaign

HOSTILE = ["tab\there", "new\nline\r\n", "back\\slash", "\\N", "", "é😀 ü", "quote ' \" ;"]


def rows(run_id: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    """``count`` pending rows whose values cover what COPY's text format must escape."""
    offered = [{"key": "a", "subject": 'S "1"\t\\', "template": "t/a.html"}]  # one object
    paris = timezone(timedelta(hours=2))
    return [
        {
            "run_id": run_id,
            "campaign": "alerts",
            "recipient_id": f"u{n:04d}",
            "email": f"u{n}@example.com",
            "decision_id": f"{run_id}-{n}",
            "trigger_id": "",
            "status": "pending",
            "skip_reason": None,
            "variant": HOSTILE[n % len(HOSTILE)],
            "probability": 1 / 3 if n % 2 else None,
            "pmf": {"a": 1 / 3, "b\n": 2 / 3},
            "offered": offered,
            "context": {"name": HOSTILE[(n + 1) % len(HOSTILE)], "n": n, "ok": n % 2 == 0},
            "items": [f"i{n}", "\\N"],
            "created_at": datetime(2026, 12, 7, 9, 30, tzinfo=paris) + timedelta(seconds=n),
            "lease_expires": None,
        }
        for n in range(start, start + count)
    ]


def stored(url: str, run_id: str) -> dict[str, dict[str, Any]]:
    """The run's rows as the database holds them, by decision id."""
    db = create_engine(url)
    try:
        with Session(db) as session:
            found = session.scalars(select(LedgerRow).where(LedgerRow.run_id == run_id)).all()
            return {row.decision_id: row.model_dump() for row in found}
    finally:
        db.dispose()


def insert(url: str, values: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    db = create_engine(url)
    try:
        with Session(db) as session:
            landed = insert_returning(session, LedgerRow, values, "id", "decision_id")
            session.commit()
            return landed
    finally:
        db.dispose()


@pytest.fixture
def url(project: Project) -> str:
    project.engine().close()  # the schema, migrated
    return project.db_url


@pytest.fixture
def pg_url(postgres_url: str, tmp_path: Any) -> str:
    """A migrated PostgreSQL database (``COPY`` is PostgreSQL's)."""
    Project(tmp_path / "p", postgres_url).engine().close()
    return postgres_url


@pytest.mark.postgres
def test_a_batch_by_copy_stores_every_value_as_the_insert_does(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    copied = rows("by-copy", 40)
    inserted = rows("by-insert", 40)
    landed = insert(pg_url, copied)
    monkeypatch.setattr(copy_rows, "COPY_FROM", 10_000)  # the multi-row INSERT
    insert(pg_url, inserted)

    by_copy, by_insert = stored(pg_url, "by-copy"), stored(pg_url, "by-insert")
    assert sorted(d for _, d in landed) == sorted(by_copy)
    assert {by_copy[d]["id"] for _, d in landed} == {i for i, _ in landed}
    different = {"id", "run_id", "decision_id"}
    for n in range(40):
        a, b = by_copy[f"by-copy-{n}"], by_insert[f"by-insert-{n}"]
        assert {k: v for k, v in a.items() if k not in different} == {
            k: v for k, v in b.items() if k not in different
        }
        assert a["variant"] == HOSTILE[n % len(HOSTILE)]  # "\\N" is a string, "" is not NULL
        assert a["created_at"] == datetime(2026, 12, 7, 7, 30, tzinfo=UTC) + timedelta(seconds=n)


@pytest.mark.postgres
def test_rows_that_collide_with_the_table_or_each_other_are_skipped_and_not_returned(
    pg_url: str,
) -> None:
    insert(pg_url, rows("r", 40))  # u0000..u0039
    batch = rows("r", 40, start=20) + rows("r", 5, start=100)  # half of it is in already
    batch[-1] = batch[-1] | {"recipient_id": batch[-2]["recipient_id"]}  # twice in the batch
    landed = insert(pg_url, batch)
    expected = [f"r-{n}" for n in (*range(40, 60), 100, 101, 102, 103)]
    assert sorted(d for _, d in landed) == sorted(expected)
    assert len(stored(pg_url, "r")) == 64


@pytest.mark.postgres
def test_two_batches_in_one_transaction_and_a_staging_table_rolled_back(pg_url: str) -> None:
    db = create_engine(pg_url, pool_size=1, max_overflow=0)  # one connection, reused
    try:
        with Session(db) as session:  # the staging table is made here, then rolled back
            assert len(insert_returning(session, LedgerRow, rows("gone", 40), "id")) == 40
            session.rollback()
        with Session(db) as session:
            first = insert_returning(session, LedgerRow, rows("r", 40), "id")
            second = insert_returning(session, LedgerRow, rows("r", 40, start=40), "id")
            session.commit()
    finally:
        db.dispose()
    assert len(first) == len(second) == 40
    assert not set(first) & set(second)
    assert len(stored(pg_url, "r")) == 80
    assert not stored(pg_url, "gone")


def test_small_batches_uneven_rows_and_sqlite_go_by_insert(
    url: str, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[bool] = []
    real = copy_rows.can_copy

    def spy(*args: Any) -> bool:
        chosen.append(real(*args))
        return chosen[-1]

    monkeypatch.setattr("engine.db.can_copy", spy)
    uneven = rows("u", 40)
    uneven[3] = uneven[3] | {"arm": "control"}  # a column the others do not name
    no_default = [{k: v for k, v in row.items() if k != "created_at"} for row in rows("d", 40)]
    for batch in (rows("s", copy_rows.COPY_FROM - 1), uneven, no_default):
        insert(url, batch)
    assert chosen == [False, False, False]
    assert len(stored(url, "u")) == 40
    assert all(row["created_at"] for row in stored(url, "d").values())  # its default
    insert(url, rows("big", 40))
    assert chosen[-1] is url.startswith("postgresql")


def test_a_campaign_run_claims_its_batches_by_copy_on_postgresql(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    copied: list[int] = []
    real = copy_rows.copy_returning

    def spy(session: Any, table: Any, values: Any, returned: Any) -> Any:
        copied.append(len(values))
        return real(session, table, values, returned)

    monkeypatch.setattr("engine.db.copy_returning", spy)
    engine = project.engine()
    project.seed(engine, people=60)
    summary = run_campaign(engine, "alerts", run_id="r1")
    assert summary.sent == 60
    on_postgres = project.db_url.startswith("postgresql")
    assert copied == ([60] if on_postgres else [])
