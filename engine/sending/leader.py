"""One scheduler per database: leader election for ``tailormail serve``.

Any number of ``serve`` processes may run against one database; exactly one of them (the
leader) runs the schedules. The others stand by and take over when the leader dies.

- PostgreSQL: a session-level advisory lock held on a connection of its own. When the
  leader's process dies, its connection closes and PostgreSQL releases the lock at once,
  so a standby takes over at its next attempt (``retry`` seconds at most).
- Any other database (SQLite): a lease row in ``scheduler_leases`` with an owner and an
  expiry, renewed every ``ttl / 3`` seconds. A dead leader's lease expires after ``ttl``
  seconds and a standby takes it.

A leader that can no longer confirm its lock (its connection broke, its lease was taken
after a long stall) stops its scheduler before anyone else can start one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col

from engine.db import insert_ignore, session_scope
from engine.models import SchedulerLeaseRow, utcnow

log = logging.getLogger(__name__)

LOCK_NAME = "scheduler"
_EXPIRED = datetime(2000, 1, 1, tzinfo=UTC)  # a lease row nobody holds yet


def worker_id() -> str:
    """A name for this process that is unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLock:
    """The lock itself: ``acquire`` tries once, ``confirm`` says whether it is still held."""

    def __init__(self, db: SAEngine, owner: str, ttl: float) -> None:
        self.db = db
        self.owner = owner
        self.ttl = ttl

    def acquire(self) -> bool:
        """Try to take the lock now; True when this process holds it afterwards."""
        raise NotImplementedError

    def confirm(self) -> bool:
        """Renew the lock; False when it is lost (the caller must stop acting at once)."""
        raise NotImplementedError

    def release(self) -> None:
        """Give the lock up (a clean shutdown: a standby need not wait for expiry)."""
        raise NotImplementedError


class AdvisoryLock(LeaderLock):
    """PostgreSQL: ``pg_try_advisory_lock`` on a connection kept open while leading."""

    key = zlib.crc32(b"tailormail:" + LOCK_NAME.encode())

    def __init__(self, db: SAEngine, owner: str, ttl: float) -> None:
        super().__init__(db, owner, ttl)
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        """Open a connection and try the lock on it; keep the connection only on success."""
        connection = self.db.connect()
        try:
            got = bool(
                connection.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}
                ).scalar_one()
            )
            connection.commit()
        except Exception:
            connection.invalidate()
            connection.close()
            raise
        if got:
            self._connection = connection
        else:
            connection.close()
        return got

    def confirm(self) -> bool:
        """The lock lives as long as its connection: ask PostgreSQL that it still holds it."""
        if self._connection is None:
            return False
        try:
            held = self._connection.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND objid = :k AND pid = pg_backend_pid() AND granted"
                ),
                {"k": self.key & 0xFFFFFFFF},
            ).scalar_one()
            self._connection.commit()
        except Exception:  # the connection broke: PostgreSQL has released the lock
            log.exception("scheduler leader lost its database connection")
            self._drop()
            return False
        return bool(held)

    def release(self) -> None:
        """Unlock and close the connection."""
        if self._connection is None:
            return
        try:
            self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._connection.commit()
        finally:
            self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()  # never hand a lock-holding session back to the pool
                connection.close()
            except Exception:
                log.debug("closing the leader connection failed", exc_info=True)


class LeaseLock(LeaderLock):
    """Any database: a lease row with owner and expiry, taken over once it has expired."""

    def _take(self, *, only_mine: bool) -> bool:
        now = utcnow()
        with session_scope(self.db) as session:
            insert_ignore(
                session,
                SchedulerLeaseRow,
                [{"name": LOCK_NAME, "owner": "", "expires_at": _EXPIRED, "acquired_at": now}],
            )
            stmt = (
                update(SchedulerLeaseRow)
                .where(col(SchedulerLeaseRow.name) == LOCK_NAME)
                .values(expires_at=now + timedelta(seconds=self.ttl))
            )
            if only_mine:
                stmt = stmt.where(col(SchedulerLeaseRow.owner) == self.owner)
            else:
                stmt = stmt.where(
                    (col(SchedulerLeaseRow.owner) == self.owner)
                    | (col(SchedulerLeaseRow.expires_at) < now)
                ).values(owner=self.owner, acquired_at=now)
            return bool(session.execute(stmt).rowcount == 1)  # type: ignore[attr-defined]

    def acquire(self) -> bool:
        """Take the lease when it is free, expired, or already ours."""
        return self._take(only_mine=False)

    def confirm(self) -> bool:
        """Extend our lease; False when someone else holds it now."""
        try:
            return self._take(only_mine=True)
        except Exception:
            log.exception("scheduler leader could not renew its lease")
            return False

    def release(self) -> None:
        """Expire our lease now, so a standby takes over at its next attempt."""
        with session_scope(self.db) as session:
            session.execute(
                update(SchedulerLeaseRow)
                .where(col(SchedulerLeaseRow.name) == LOCK_NAME)
                .where(col(SchedulerLeaseRow.owner) == self.owner)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )


def make_lock(db: SAEngine, owner: str, ttl: float) -> LeaderLock:
    """The right lock for ``db``'s dialect."""
    if db.dialect.name == "postgresql":
        return AdvisoryLock(db, owner, ttl)
    return LeaseLock(db, owner, ttl)


class Leadership:
    """Runs ``on_elected`` when this process becomes leader and ``on_deposed`` when it
    stops being one, checking every ``ttl / 3`` seconds on a daemon thread."""

    def __init__(
        self,
        db: SAEngine,
        *,
        on_elected: Callable[[], Any],
        on_deposed: Callable[[], Any],
        ttl: float = 30.0,
        owner: str | None = None,
    ) -> None:
        self.owner = owner or worker_id()
        self.lock = make_lock(db, self.owner, ttl)
        self.interval = max(ttl / 3.0, 0.05)
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> bool:
        """One election round; returns whether this process leads afterwards."""
        if self.leading:
            if not self.lock.confirm():
                self.leading = False
                log.warning("%s is no longer the scheduler leader", self.owner)
                self.on_deposed()
        else:
            try:
                won = self.lock.acquire()
            except Exception:
                log.exception("scheduler election failed; retrying")
                won = False
            if won:
                self.leading = True
                log.warning("%s became the scheduler leader", self.owner)
                self.on_elected()
        return self.leading

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.interval)

    def start(self) -> Leadership:
        """Start campaigning on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="tailormail-leader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop campaigning; a leader hands its lock back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.leading:
            self.leading = False
            self.on_deposed()
            self.lock.release()
