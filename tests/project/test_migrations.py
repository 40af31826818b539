"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from engine.db import make_db, migrate


def test_migrations_match_the_models(db_url: str) -> None:
    db = make_db(db_url)
    with db.connect() as connection:
        context = MigrationContext.configure(connection)
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == [], f"run an Alembic autogenerate: {differences}"
    assert "ledger" in inspect(db).get_table_names()
    migrate(db)  # a second upgrade is a no-op
    db.dispose()
