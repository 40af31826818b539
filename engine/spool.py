"""The event spool: clicks and opens that could not be stored wait in a file, never lost.

The tracking server must answer a reader at once, even while the database is down; the
event it could not store is appended to ``spool/events.jsonl`` in the project, and the
reward job replays the spool before it joins rewards. Each spooled event carries its own
dedupe key, so a replay interrupted halfway can simply run again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import record_event
from engine.types import EventType, TrackingEvent

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)


def _encode(event: TrackingEvent, dedupe_key: str) -> str:
    fields: dict[str, Any] = {
        name: getattr(event, name) for name in TrackingEvent.__dataclass_fields__
    }
    fields["type"] = EventType(event.type).value
    fields["timestamp"] = event.timestamp.isoformat()
    return json.dumps({"dedupe_key": dedupe_key, "event": fields}, default=str)


def _decode(line: str) -> tuple[TrackingEvent, str]:
    record = json.loads(line)
    fields = record["event"]
    fields["type"] = EventType(fields["type"])
    fields["timestamp"] = datetime.fromisoformat(fields["timestamp"])
    return TrackingEvent(**fields), str(record["dedupe_key"])


class EventSpool:
    """An append-only JSONL file of events waiting to be stored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def put(self, event: TrackingEvent, dedupe_key: str | None = None) -> None:
        """Append ``event``; flushed and synced, since the database could not take it."""
        line = _encode(event, dedupe_key or f"spool:{uuid.uuid4().hex}") + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def pending(self) -> int:
        """How many events wait in the spool."""
        if not self.path.exists():
            return 0
        with self.path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())

    def replay(self, engine: Engine) -> int:
        """Store every spooled event; keep the ones that still fail. Returns how many landed."""
        with self._lock:
            if not self.path.exists():
                return 0
            taken = self.path.with_suffix(".replaying")
            os.replace(self.path, taken)
        stored, failed = 0, []
        for line in taken.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                event, key = _decode(line)
            except (ValueError, KeyError, TypeError):
                log.error("unreadable line in the event spool, kept aside: %r", line[:200])
                failed.append(line)
                continue
            try:
                stored += int(record_event(engine, event, dedupe_key=key))
            except Exception:
                log.exception("a spooled %s event still cannot be stored", event.type)
                failed.append(line)
        with self._lock:
            if failed:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write("\n".join(failed) + "\n")
            taken.unlink()
        return stored
