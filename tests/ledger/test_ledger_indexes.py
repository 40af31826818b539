"""The ledger's lean indexes (migration 0018) still serve every lookup that needs them.

The indexes of the Message-ID, the send reference and the provider id hold only rows that
have one (partial), and the run's rows are found through the (run, recipient) key: each
lookup by value must still be answered from an index, on both databases, not by reading
the ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from kit.project import Project
from sqlalchemy import and_, create_engine, inspect, or_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from engine.db import migrate
from engine.identifiers import REF_LENGTH
from engine.ledger.statements import LEDGER
from engine.models import OTHER_MESSAGE_ID

LOOKUPS = {
    "ix_ledger_send_ref": LEDGER.c.send_ref == "abc",
    "ix_ledger_message_id": and_(
        LEDGER.c.message_id.in_(["<a@x>", "<b@x>"]), text(OTHER_MESSAGE_ID)
    ),
    "ix_ledger_provider_id": LEDGER.c.provider_id == "p-1",
    "uq_ledger_run_recipient": LEDGER.c.run_id == "r1",
}


def plan(connection: Connection, where: Any) -> str:
    stmt = select(LEDGER.c.id).where(where)
    compiled = stmt.compile(connection, compile_kwargs={"literal_binds": True})
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table
        rows = connection.execute(text(f"EXPLAIN {compiled}")).all()
        return "\n".join(str(row[0]) for row in rows)
    rows = connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("index", sorted(LOOKUPS))
def test_each_lookup_by_value_is_answered_from_its_index(project: Project, index: str) -> None:
    engine = project.engine()
    try:
        with engine.db.begin() as connection:
            found = plan(connection, LOOKUPS[index])
    finally:
        engine.close()
    # SQLite names a unique constraint's index itself
    assert index in found or (index.startswith("uq_") and "INDEX sqlite_autoindex_ledger" in found)


def test_the_provider_event_lookup_uses_all_three_partial_indexes(project: Project) -> None:
    """An event naming a message only by an id: the provider's, a Message-ID a plugin
    set, or one tailormail made (found by its send reference)."""
    engine = project.engine()
    spellings = ["<m@x>", "m@x"]
    try:
        with engine.db.begin() as connection:
            found = plan(
                connection,
                or_(
                    LEDGER.c.provider_id.in_(spellings),
                    and_(LEDGER.c.message_id.in_(spellings), text(OTHER_MESSAGE_ID)),
                    LEDGER.c.send_ref.in_(["m"]),
                ),
            )
    finally:
        engine.close()
    assert all(f"ix_ledger_{name}" in found for name in ("provider_id", "message_id", "send_ref"))


def test_a_claimed_row_adds_no_entry_to_the_partial_indexes(project: Project) -> None:
    engine = project.engine()
    try:
        with engine.db.begin() as connection:
            if connection.dialect.name == "postgresql":
                defined = connection.execute(
                    text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger'")
                ).all()
            else:
                defined = connection.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'ledger'")
                ).all()
    finally:
        engine.close()
    by_name = {name: str(sql) for name, sql in defined}
    assert "ix_ledger_run_id" not in by_name
    for column in ("message_id", "send_ref", "provider_id"):
        assert f"{column} IS NOT NULL" in by_name[f"ix_ledger_{column}"]
    # a Message-ID tailormail made (<send_ref@domain>) is found by its reference instead
    assert "substr" in by_name["ix_ledger_message_id"]


def test_migration_0019_drops_the_decision_id_key_and_keeps_every_row(db_url: str) -> None:
    """The decision id derives from (run, recipient), whose key guards it: its own unique
    index (a random page written per new row) goes, and the rebuild on SQLite keeps the
    rows and every other index."""
    db = create_engine(db_url)
    migrate(db, "0018")
    row = {
        "run_id": "r1",
        "campaign": "c",
        "recipient_id": "u1",
        "email": "u1@example.com",
        "decision_id": "d1",
        "status": "sent",
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
        "send_ref": "ref-1",
    }
    # The ledger as it was then: today's table would name columns 0018 did not have.
    then = sa.table("ledger", *(sa.column(name) for name in row))
    with db.begin() as connection:
        connection.execute(then.insert(), [row, row | {"recipient_id": "u2", "decision_id": "d2"}])
    migrate(db)
    inspector = inspect(db)
    keys = [c["column_names"] for c in inspector.get_unique_constraints("ledger")]
    assert ["decision_id"] not in keys
    assert ["run_id", "recipient_id", "trigger_id"] in keys  # 0024: a row per trigger
    assert {"ix_ledger_send_ref", "ix_ledger_recipient_id"} <= {
        index["name"] for index in inspector.get_indexes("ledger")
    }
    with db.begin() as connection:
        kept = connection.execute(select(LEDGER.c.recipient_id, LEDGER.c.send_ref)).all()
        assert sorted(kept) == [("u1", "ref-1"), ("u2", "ref-1")]
        with pytest.raises(IntegrityError):  # the (run, recipient, "") key still holds
            connection.execute(then.insert(), [row | {"decision_id": "d3"}])
    db.dispose()


def test_the_message_id_index_condition_matches_the_references_length() -> None:
    """``<`` + a reference + ``@``: the Message-IDs tailormail makes stay out of the index."""
    assert f"substr(message_id, 1, {REF_LENGTH + 2})" in OTHER_MESSAGE_ID
