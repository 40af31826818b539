"""Making what ``forget`` erased unrecoverable from a SQLite database file.

SQLite leaves deleted and overwritten rows in the file's free space unless the connection
that deletes has ``secure_delete`` on (every engine connection has: ``engine.db``; the
erasing session says so again, ``secure_delete``), and every transaction's pages
stay in the write-ahead log until a checkpoint copies them back and the log is cut to zero
bytes (``compact``: ``wal_checkpoint(TRUNCATE)``). A reader in the middle of a transaction
(a running ``tailormail serve``) keeps the checkpoint from completing: ``compact`` retries,
then says so; ``tailormail forget --compact`` with the server stopped finishes, and also
VACUUMs (rewrites the file, dropping free space that older, non-secure deletes left).

PostgreSQL needs none of this here: see docs/security.md for what VACUUM does there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session

ATTEMPTS = 5  # checkpoint attempts before ``compact`` gives up and says how to finish
BUSY_MS = 1000  # how long each attempt waits for readers (the engine's default is 30 s)
PAUSE = 0.2  # seconds between attempts, growing linearly


@dataclass(frozen=True)
class Compaction:
    """How ``compact`` went: ``done`` when the WAL is empty (nothing erased left in it)."""

    done: bool
    vacuumed: bool
    attempts: int


def secure_delete(session: Session) -> None:
    """Have this session's connection zero what it deletes or overwrites (SQLite only)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA secure_delete=ON"))


def compact(db: SAEngine, *, vacuum: bool = False, attempts: int = ATTEMPTS) -> Compaction | None:
    """Checkpoint the WAL into the database and truncate it (after a VACUUM with ``vacuum``);
    None on a database without a WAL file of its own (PostgreSQL)."""
    if db.dialect.name != "sqlite":
        return None
    with db.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql("PRAGMA secure_delete=ON")
        patience = connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
        connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_MS}")
        try:
            if vacuum:
                connection.exec_driver_sql("VACUUM")
            for attempt in range(1, attempts + 1):
                busy, _log, _copied = connection.exec_driver_sql(
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                ).one()
                if not busy:
                    return Compaction(True, vacuum, attempt)
                if attempt < attempts:
                    time.sleep(PAUSE * attempt)
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={int(patience)}")
    return Compaction(False, vacuum, attempts)
