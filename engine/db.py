"""Database engine: SQLite in WAL mode by default, PostgreSQL by URL; dialect-neutral helpers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel, create_engine

from engine import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Audience filters ignore case the way PostgreSQL's lower() does, not ASCII-only.
    dbapi_connection.create_function("tm_lower", 1, _lower, deterministic=True)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def migrate(db: SAEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (a no-op when it is already there)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Two processes starting at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(74657201)"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def make_db(url: str, *, echo: bool = False) -> SAEngine:
    """Create the SQLAlchemy engine for ``url`` and migrate the schema to the latest."""
    if url.startswith("sqlite"):
        db = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(db, "connect", _sqlite_pragmas)
    else:
        db = create_engine(url, echo=echo, pool_pre_ping=True)
    migrate(db)
    return db


@contextmanager
def session_scope(db: SAEngine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(db, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_ignore(
    session: Session, table: type[SQLModel], rows: Iterable[Mapping[str, Any]]
) -> int:
    """Insert rows, skipping any that collide with a unique key; return how many landed."""
    values = [dict(row) for row in rows]
    if not values:
        return 0
    dialect = session.get_bind().dialect.name
    sa_table = table.__table__  # type: ignore[attr-defined]
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(sa_table).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(sa_table).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"no upsert for dialect {dialect}")
    result: Any = session.execute(stmt)
    return int(result.rowcount or 0)


def insert_returning(
    session: Session, table: type[SQLModel], rows: Iterable[Mapping[str, Any]], *columns: str
) -> list[tuple[Any, ...]]:
    """Insert rows, skipping unique-key collisions; return ``columns`` of the rows that landed.

    One statement for the whole batch; what it returns is exactly what this call inserted,
    which is how a process knows which ledger rows it owns.
    """
    values = [dict(row) for row in rows]
    if not values:
        return []
    dialect = session.get_bind().dialect.name
    sa_table = table.__table__  # type: ignore[attr-defined]
    module: Any = postgresql if dialect == "postgresql" else sqlite
    returned = [sa_table.c[name] for name in columns]
    # Parameters apart from the statement: it compiles once and is cached, and SQLAlchemy
    # sends the rows as multi-row VALUES ("insertmanyvalues"), RETURNING included.
    stmt = module.insert(sa_table).on_conflict_do_nothing().returning(*returned)
    return [tuple(row) for row in session.execute(stmt, values).all()]


def upsert(
    session: Session,
    table: type[SQLModel],
    rows: Iterable[Mapping[str, Any]],
    key: list[str],
) -> None:
    """Insert rows, replacing the non-key columns of rows whose ``key`` already exists."""
    values = [dict(row) for row in rows]
    if not values:
        return
    dialect = session.get_bind().dialect.name
    sa_table = table.__table__  # type: ignore[attr-defined]
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(sa_table).values(values)
    updates = {c: stmt.excluded[c] for c in values[0] if c not in key}
    stmt = (
        stmt.on_conflict_do_update(index_elements=key, set_=updates)
        if updates
        else (stmt.on_conflict_do_nothing())
    )
    session.execute(stmt)
