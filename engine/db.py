"""Database engine: SQLite in WAL mode by default, PostgreSQL by URL; dialect-neutral helpers."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

from engine.copy_rows import can_copy, copy_returning
from engine.errors import DatabaseError

if TYPE_CHECKING:
    from sqlmodel import Session, SQLModel


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Every update or delete zeroes the old row version (most builds default to off), so an
    # erased person's data is not left in free space: see engine.audience.compaction.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
    # Audience filters ignore case the way PostgreSQL's lower() does, not ASCII-only.
    dbapi_connection.create_function("tm_lower", 1, _lower, deterministic=True)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_REVISION_LINE = re.compile(r"""^(down_)?revision\b[^=\n]*=\s*(?:["']([^"'\n]+)["']|None)""", re.M)


@functools.cache
def newest_revision(versions: Path = MIGRATIONS / "versions") -> str | None:
    """The newest migration's revision id, read from the ``revision =`` and
    ``down_revision =`` lines of the files in ``versions`` (without importing Alembic);
    ``None`` unless exactly one revision is no other's parent."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        for down, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            if value:
                (parents if down else revisions).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_newest_revision(db: SAEngine) -> bool:
    """Whether the database's ``alembic_version`` holds the newest revision (and only it)."""
    newest = newest_revision()
    if newest is None:
        return False
    with db.connect() as connection:
        if not db.dialect.has_table(connection, "alembic_version"):
            return False
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return list(found) == [newest]


def migrate(db: SAEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (a no-op when it is already there).

    A database already at the newest revision costs one look at ``alembic_version``, and
    Alembic (~80 ms to import) is loaded only when there is something to migrate.
    """
    if revision == "head" and at_newest_revision(db):
        return
    # lazy: Alembic's machinery (~80 ms) only when the schema must change
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Two processes starting at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(74657201)"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def make_db(url: str, *, echo: bool = False) -> SAEngine:
    """Create the SQLAlchemy engine for ``url`` and migrate the schema to the latest.

    Every way a URL can fail to give a database (not a URL, ``postgres://``, a driver not
    installed, a server not answering, an SQLite file that cannot be created) raises
    ``DatabaseError`` with one line naming the URL (password hidden) and the fix.
    """
    parsed = parse_database_url(url)
    shown = parsed.render_as_string(hide_password=True)
    sqlite_file = parsed.get_backend_name() == "sqlite"
    if sqlite_file:
        prepare_sqlite_file(parsed.database, shown)
    try:
        if sqlite_file:
            db = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(db, "connect", _sqlite_pragmas)
        else:
            options: dict[str, Any] = {}
            if parsed.get_driver_name() == "psycopg2":
                # An UPDATE per batch (the ledger's) in pages, not one round trip per row.
                options["executemany_mode"] = "values_plus_batch"
            db = create_engine(url, echo=echo, pool_pre_ping=True, **options)
    except NoSuchModuleError:
        raise DatabaseError(
            f"database_url {shown}: unknown kind of database {parsed.drivername!r}; "
            "use sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from None
    except ImportError as exc:
        raise DatabaseError(f"database_url {shown}: {_missing_driver(parsed, exc)}") from None
    try:
        migrate(db)
    except OperationalError as exc:
        db.dispose()
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise DatabaseError(f"cannot open the database {shown}: {reason}") from None
    return db


def parse_database_url(url: str) -> URL:
    """``url`` parsed; not a URL, the ``postgres://`` spelling, or a password with an
    unencoded ``@`` is a ``DatabaseError`` (that never shows the password)."""
    scheme, separator, rest = url.partition("://")
    authority = rest.split("/", 1)[0]
    if separator and authority.count("@") > 1:
        host = authority.rsplit("@", 1)[1]
        raise DatabaseError(
            f"database_url {scheme}://***@{host}/...: the user and password hold an '@'; "
            "write it URL-encoded as %40 (and ':' as %3A, '/' as %2F, '%' as %25), e.g. "
            "postgresql://alerts:p%40ss@db.example.net/tailormail"
        )
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"database_url {url!r} is not a database URL; "
            "use sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from None
    if parsed.drivername.split("+")[0] == "postgres":
        raise DatabaseError(
            f"database_url {parsed.render_as_string(hide_password=True)}: SQLAlchemy does "
            "not read the scheme 'postgres://'; write 'postgresql://' instead"
        )
    return parsed


def _missing_driver(parsed: URL, exc: ImportError) -> str:
    module = exc.name or str(exc)
    if parsed.get_backend_name() == "postgresql":
        return (
            f"the PostgreSQL driver ({module}) is not installed; "
            "run: pip install 'tailormail[postgres]'"
        )
    return f"its driver (Python module {module!r}) is not installed"


def prepare_sqlite_file(database: str | None, shown: str) -> None:
    """Create an SQLite database file readable by its owner only (SQLite gives its -wal
    and -shm files the same mode); a path that cannot hold it is a ``DatabaseError``."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists():
        if path.is_dir():
            raise DatabaseError(f"cannot open the database {shown}: {path} is a directory")
        return
    if not path.parent.is_dir():
        raise DatabaseError(
            f"cannot create the database {shown}: directory {path.parent} does not exist"
        )
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass  # another process created it meanwhile
    except OSError as exc:
        raise DatabaseError(f"cannot create the database {shown}: {exc.strerror}") from None


@contextmanager
def session_scope(db: SAEngine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    # lazy: SQLModel and the ORM (~0.13 s) load with the first session, not with the
    # database: `tailormail runs` and the secret check read through Core alone
    from sqlmodel import Session

    with Session(db, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def lock_campaign(session: Session, campaign: str) -> None:
    """Hold campaign ``campaign``'s lock until ``session``'s transaction ends (PostgreSQL:
    a transaction advisory lock; SQLite has one writer at a time, which is the lock as soon
    as the transaction has written)."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(b"tailormail campaign\0" + campaign.encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _dialect(session: Session) -> Any:
    """The dialect module (``insert ... on conflict``) of the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # lazy: the PostgreSQL dialect (~20 ms) loads only for a PostgreSQL database
        from sqlalchemy.dialects import postgresql

        return postgresql
    if dialect == "sqlite":
        return sqlite
    raise NotImplementedError(f"no upsert for dialect {dialect}")  # pragma: no cover


def insert_ignore(
    session: Session, table: type[SQLModel], rows: Iterable[Mapping[str, Any]]
) -> int:
    """Insert rows, skipping any that collide with a unique key; return how many landed."""
    values = [dict(row) for row in rows]
    if not values:
        return 0
    sa_table = table.__table__  # type: ignore[attr-defined]
    stmt = _dialect(session).insert(sa_table).values(values).on_conflict_do_nothing()
    result: Any = session.execute(stmt)
    return int(result.rowcount or 0)


def insert_returning(
    session: Session, table: type[SQLModel], rows: Iterable[Mapping[str, Any]], *columns: str
) -> list[tuple[Any, ...]]:
    """Insert rows, skipping unique-key collisions; return ``columns`` of the rows that landed.

    One statement for the whole batch (on PostgreSQL, a large batch goes by ``COPY``:
    ``engine.copy_rows``); what it returns is exactly what this call inserted, which is
    how a process knows which ledger rows it owns.
    """
    values = [dict(row) for row in rows]
    if not values:
        return []
    sa_table = table.__table__  # type: ignore[attr-defined]
    if can_copy(session, sa_table, values):
        return copy_returning(session, sa_table, values, columns)
    module = _dialect(session)
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
    sa_table = table.__table__  # type: ignore[attr-defined]
    stmt = _dialect(session).insert(sa_table).values(values)
    updates = {c: stmt.excluded[c] for c in values[0] if c not in key}
    stmt = (
        stmt.on_conflict_do_update(index_elements=key, set_=updates)
        if updates
        else (stmt.on_conflict_do_nothing())
    )
    session.execute(stmt)
