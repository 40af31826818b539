"""Click intake: the request path appends to the local log; a writer stores behind it.

The handlers call ``Intake.record``: one ``os.write`` and the reader has their answer. A
background thread tails the log and batch-inserts its events into the database (each
with a dedupe key, so a replay after a crash stores nothing twice), then deletes the
segments it stored. While the database is down the log simply grows; the writer retries
every second at most, so once the database answers again an unsubscribe is applied within
about ``RETRY_CAP + 1`` seconds (``engine.feedback.writer``). The writer runs on a thread, or
(``Intake(..., project_dir=...)``, as ``serve`` runs it) in a child process of its own.
Logs left by dead processes are adopted and stored by any live writer and by the reward
job (``store_orphans``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.clock import utcnow
from engine.feedback.eventlog import SEGMENT_BYTES, EventLog, Tail, orphans, read_lines
from engine.feedback.events import record_events
from engine.feedback.writer import Writer, WriterProcess, transient
from engine.types import EventType, TrackingEvent

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)

BATCH_LINES = 2000
REJECTED_FILE = "rejected.jsonl"
# What a client sends is stored at most this long (characters): a real user agent is
# under 300, a tracked URL under 2,000; a 60 KB one is an attack on the database.
FIELD_CAPS = {"user_agent": 512, "url": 2048}
# Rebuilding a TrackingEvent from a record: short keys keep the log small.
_FIELDS = {"s": "send_id", "u": "url", "a": "user_agent", "b": "bot", "m": "machine", "d": "data"}


def encode(seq: int, key: str, kind: EventType, moment: float, fields: dict[str, Any]) -> bytes:
    """One log line: sequence number, dedupe key, event type, Unix time and event fields."""
    record = {"q": seq, "k": key, "t": kind.value, "ts": moment}
    record.update((short, fields[name]) for short, name in _FIELDS.items() if name in fields)
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> tuple[int, TrackingEvent, str]:
    """The sequence number, event and dedupe key of a log line (``ValueError`` if unreadable)."""
    try:
        record = json.loads(line)
        fields = {name: record[short] for short, name in _FIELDS.items() if short in record}
        event = TrackingEvent(
            type=EventType(record["t"]),
            timestamp=datetime.fromtimestamp(float(record["ts"]), UTC),
            **fields,
        )
        return int(record["q"]), event, str(record["k"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an intake record: {exc}") from exc


def spool_dir(engine: Engine) -> Path:
    """Where ``engine``'s intake logs live."""
    return engine.settings.path(engine.settings.spool_dir)


class _Store:
    """Stores decoded batches; records the database refuses for good go to ``rejected``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rejected = spool_dir(engine) / REJECTED_FILE

    def lines(self, lines: Sequence[bytes]) -> int:
        """Store ``lines``; raises only when the database is unreachable. Returns max seq."""
        items: list[tuple[TrackingEvent, str]] = []
        last = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                seq, event, key = decode(line)
            except ValueError as exc:
                self._reject(line, f"unreadable: {exc}")
                continue
            items.append((event, key))
            last = max(last, seq)
        self._store(items, lines_of=lines)
        return last

    def _store(self, items: list[tuple[TrackingEvent, str]], *, lines_of: Sequence[bytes]) -> None:
        if not items:
            return
        try:
            record_events(self.engine, items)
        except Exception as exc:
            if transient(exc):
                raise
            if len(items) == 1:  # this one record is what the database refuses
                event, key = items[0]
                self._reject(key.encode(), f"{type(exc).__name__}: {exc}", event)
                return
            middle = len(items) // 2  # find the bad record(s) by halves
            self._store(items[:middle], lines_of=lines_of)
            self._store(items[middle:], lines_of=lines_of)

    def _reject(self, line: bytes, why: str, event: TrackingEvent | None = None) -> None:
        log.error("intake record kept aside in %s (%s)", self.rejected, why[:200])
        entry = {"why": why, "line": line.decode(errors="replace")}
        if event is not None:
            entry["event"] = repr(event)
        self.rejected.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Owner-only, like the event logs: a rejected record may hold an address.
        fd = os.open(self.rejected, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def store_orphans(engine: Engine, own_tag: str | None = None) -> int:
    """Store and delete the logs of dead processes; returns how many records were stored.

    A log whose database write fails stays for the next attempt.
    """
    store = _Store(engine)
    stored = 0
    for orphan in orphans(spool_dir(engine), own_tag):
        try:
            for path in orphan.segments():
                lines = read_lines(path)
                for start in range(0, len(lines), BATCH_LINES):
                    store.lines(lines[start : start + BATCH_LINES])
                stored += len(lines)
                path.unlink()
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("the log of a stopped server waits for the database: %s", exc)
            break
        orphan.finish()
        log.info("stored the log %s of a stopped server", orphan.tag)
    return stored


class Intake:
    """One process's event log and the writer (a thread, or a child process) storing it."""

    def __init__(
        self,
        engine: Engine,
        directory: Path | None = None,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        project_dir: Path | None = None,
    ) -> None:
        """Prepare the intake; the log opens on ``start`` (or on the first record).

        With ``project_dir`` the writer runs in a child process that builds its own engine
        from that project and the environment (so only for an engine built that way).
        """
        self.engine = engine
        self.directory = directory or spool_dir(engine)
        self.segment_bytes = segment_bytes
        self.project_dir = project_dir
        self._store = _Store(engine)
        self._log: EventLog | None = None
        self._pid = 0
        self._seq = 0
        self._stored = 0
        self._done = threading.Condition()
        self._append = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._writer: Writer | None = None
        self._thread: threading.Thread | None = None
        self._process: WriterProcess | None = None
        self._start_lock = threading.Lock()

    @property
    def database_ok(self) -> bool:
        """False while the writer thread finds the database unreachable (a writer process
        says so in its own log)."""
        return self._writer is None or self._writer.database_ok

    def start(self) -> Intake:
        """Open a fresh log and start the writer (again after a fork or a ``stop``)."""
        with self._start_lock:
            if self._log is not None and self._pid == os.getpid():
                return self
            self._log = event_log = EventLog(self.directory, segment_bytes=self.segment_bytes)
            event_log.open()
            self._pid = os.getpid()
            self._seq = self._stored = 0
            self._stopping.clear()
            if self.project_dir is not None:
                self._process = WriterProcess(self.project_dir, self._stored_up_to)
                self._process.start(self.directory, event_log.tag)
                return self
            self._writer = Writer(
                Tail(event_log),
                self._store.lines,
                self._stored_up_to,
                lambda: store_orphans(self.engine, event_log.tag),
                stopping=self._stopping,
                wake=self._wake,
            )
            self._thread = threading.Thread(
                target=self._writer.run, name="intake-writer", daemon=True
            )
            self._thread.start()
        return self

    def record(
        self, kind: EventType, send_id: int, *, dedupe_key: str | None = None, **fields: Any
    ) -> None:
        """Append one event; when this returns, a SIGKILL can no longer lose it.

        ``fields`` are ``TrackingEvent`` fields (url, user_agent, bot, machine, data);
        user agents and URLs are cut to ``FIELD_CAPS``.
        Raises ``OSError`` when the log cannot be written (disk full): answer 503 then.
        """
        event_log = self._log if self._pid == os.getpid() else None
        if event_log is None:
            event_log = self.start()._log
            assert event_log is not None
        fields["send_id"] = send_id
        for name, cap in FIELD_CAPS.items():
            value = fields.get(name)
            if isinstance(value, str) and len(value) > cap:
                fields[name] = value[:cap]
        with self._append:  # numbered and written in one step, so the log is in seq order
            seq = self._seq + 1
            key = dedupe_key or f"log:{event_log.tag}:{seq}"
            event_log.append(encode(seq, key, kind, utcnow().timestamp(), fields))
            self._seq = seq
        if self._thread is not None:
            self._wake.set()

    def _stored_up_to(self, seq: int) -> None:
        with self._done:
            self._stored = max(self._stored, seq)
            self._done.notify_all()

    @property
    def pending(self) -> int:
        """Events appended but not yet stored in the database."""
        with self._done:
            return self._seq - self._stored

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every event recorded so far is in the database; False on time-out."""
        with self._done:
            target = self._seq
            return self._done.wait_for(lambda: self._stored >= target, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Store what remains (up to ``timeout``), then close; leftovers wait in the log."""
        with self._start_lock:
            event_log = self._log
            if event_log is None or self._pid != os.getpid():
                return
            self.drain(timeout)
            self._stopping.set()
            self._wake.set()
            alive = False
            if self._process is not None:
                self._process.stop(timeout)
            if self._thread is not None:
                self._thread.join(timeout)
                alive = self._thread.is_alive()
            event_log.close(discard=self.pending == 0 and not alive)
            self._log = self._writer = self._thread = self._process = None
