"""Loading the project secret without ever replacing it silently.

A lost secret file used to be recreated without a word: every link already sent then
answered 404. Now a missing secret is created only for a project whose database holds
nothing signed or keyed with it (no sends, no forgotten addresses); otherwise it is an
error that says how to restore it, and nothing is created (no secret file, no database).
A new secret takes an explicit ``tailormail secret rotate`` (``engine.cli.secret``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from engine.db import parse_database_url
from engine.errors import DatabaseError
from engine.secret import (
    SECRET_ENV,
    MissingSecretError,
    ProjectSecret,
    read_secret_file,
    read_secret_lines,
    secret_file_exists,
)
from engine.settings import Settings

_NEEDS_SECRET = ("ledger", "forgotten_addresses")  # tables whose rows the secret signed
_SENDS_QUERY = " UNION ALL ".join(
    f"SELECT 1 FROM (SELECT 1 FROM {table} LIMIT 1) AS {table}" for table in _NEEDS_SECRET
)


def load_project_secret(settings: Settings) -> ProjectSecret:
    """The project's secrets: ``TAILORMAIL_SECRET`` (with ``TAILORMAIL_SECRET_PREVIOUS``),
    else the secret file, created only when the database needs no earlier secret.

    Raises ``MissingSecretError`` (naming the file and how to restore it) when the file
    is missing and the database holds sends or forgotten addresses.
    """
    previous = tuple(s.get_secret_value().encode() for s in settings.secret_previous)
    if settings.secret is not None:
        return ProjectSecret(settings.secret.get_secret_value().encode(), previous, SECRET_ENV)
    path = settings.path(settings.secret_file)
    if not secret_file_exists(path):
        if database_needs_secret(settings.resolved_database_url):
            raise MissingSecretError(missing_secret_message(path))
        read_secret_file(path)  # a brand-new project: its secret is created on first use
    current, *older = read_secret_lines(path)
    return ProjectSecret(current, (*older, *previous), str(path))


def missing_secret_message(path: Path) -> str:
    """One line: the secret file is gone, how to restore it, and the explicit way on."""
    return (
        f"the secret file {path} is missing, and the database holds sends (or forgotten "
        f"addresses) made with it: restore it from a backup (or set {SECRET_ENV} to the "
        "old secret) so links already sent keep working; to start over with a new secret "
        "(links already sent then answer 404), run `tailormail secret rotate`"
    )


def database_needs_secret(url: str) -> bool:
    """Whether the database at ``url`` holds sends or forgotten addresses; creates nothing.

    A database that does not exist yet needs nothing. One that cannot be read is a
    ``DatabaseError`` (better than guessing and creating a secret it may not need).
    """
    parsed = parse_database_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return False
        return _sqlite_needs_secret(Path(database), shown)
    try:
        db = create_engine(url)
    except (ImportError, SQLAlchemyError):
        return False  # make_db names the driver or URL problem next
    try:
        with db.connect() as connection:
            names = set(inspect(connection).get_table_names())
            if not names.issuperset(_NEEDS_SECRET):
                return False
            return connection.execute(text(_SENDS_QUERY)).first() is not None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseError(f"cannot open the database {shown}: {reason}") from None
    finally:
        db.dispose()


def _sqlite_needs_secret(path: Path, shown: str) -> bool:
    if not path.is_file():
        return False
    # Without a -wal file every row is in the main file: read it as immutable, which
    # creates no -wal or -shm file; with one, a read-only connection sees the WAL too.
    wal = Path(f"{path}-wal").exists()
    uri = f"{path.as_uri()}?mode=ro" if wal else f"{path.as_uri()}?immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open the database {shown}: {exc}") from None
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if not tables.issuperset(_NEEDS_SECRET):
            return False
        return connection.execute(_SENDS_QUERY).fetchone() is not None
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read the database {shown}: {exc}") from None
    finally:
        connection.close()
