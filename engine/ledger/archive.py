"""Archiving old runs: their ledger rows, events and rewards move out of the database into
one compressed file per run, so the ledger stops growing with every campaign ever sent.

A campaign of 10 million recipients a week adds 520 million ledger rows a year, and
``retention`` anonymizes rows but never deletes them. ``archive_run`` takes each run
that ended (``finished`` or ``failed``) before a cutoff, writes its rows to
``<directory>/<campaign>/<run>-<hash>.jsonl.gz`` and then, in one transaction, deletes them and
marks the run ``archived`` (``tailormail runs`` still lists it). The file is complete and
on disk before anything is deleted, and a crash in between leaves the rows where they
were: archiving again writes the same file again.

What a file holds is what learning and evaluation read (each decision's context, the
variants offered, the chosen one with its probability and pmf, the policy and model, the
outcome, its events' types and times, the reward), not who it was for: no address, no
recipient id, no link, no message or provider id. Forgetting a person later has nothing
there to find. The format is JSON Lines: a ``run`` line, then one ``send`` line per ledger
row with its ``events`` and ``reward``, then an ``end`` line with the counts.

An archived run is never resumed: with its rows gone, everyone would look unsent.
Suppressions (unsubscribes, bounces) and recipes' interactions are not the ledger's and
stay.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from engine.appendlog import fsync_directory
from engine.clock import as_utc
from engine.db import session_scope
from engine.ledger.statements import LEDGER
from engine.models import DECISION_FIELDS, EventRow, RewardRow, RunRow, row_offered

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

FORMAT = "tailormail-archive/1"
ARCHIVED = "archived"
"""The status of a run whose rows are in an archive file."""
ENDED = ("finished", "failed")
"""The statuses of runs that may be archived (a running or paused run may go on)."""
CHUNK = 5_000
"""Ledger rows read (and their events and rewards looked up) at a time."""

RUNS = RunRow.__table__  # type: ignore[attr-defined]
EVENTS = EventRow.__table__  # type: ignore[attr-defined]
REWARDS = RewardRow.__table__  # type: ignore[attr-defined]

KEPT = ("id", "status", "skip_reason", *DECISION_FIELDS, "failure", "created_at", "sent_at")
"""The ledger columns an archive keeps: the decision and its outcome, nobody's identity."""
EVENT_KEPT = ("type", "timestamp", "bot", "machine")
REWARD_KEPT = ("reward", "event_types", "computed_at", "learned_by")


@dataclass(frozen=True)
class ArchivedRun:
    """One run archived (or, in a dry run, that would be)."""

    run_id: str
    campaign: str
    ended_at: datetime
    rows: int
    events: int = 0
    rewards: int = 0
    path: Path | None = None


def ended_runs(db: SAEngine, before: datetime) -> list[ArchivedRun]:
    """The runs that ended before ``before`` and still have their rows, oldest first,
    with how many ledger rows each has."""
    ended = func.coalesce(RUNS.c.finished_at, RUNS.c.started_at)
    count = select(func.count()).where(LEDGER.c.run_id == RUNS.c.id).scalar_subquery()
    stmt = (
        select(RUNS.c.id, RUNS.c.campaign, ended, count)
        .where(RUNS.c.status.in_(ENDED), ended < before)
        .order_by(ended, RUNS.c.id)
    )
    with session_scope(db) as session:
        found = session.execute(stmt).all()
    return [
        ArchivedRun(run_id, campaign, as_utc(at), int(rows)) for run_id, campaign, at, rows in found
    ]


def archive_run(db: SAEngine, run: ArchivedRun, directory: Path) -> ArchivedRun:
    """Write ``run``'s file, then delete its rows and mark it archived, in one transaction."""
    path = directory / _safe(run.campaign) / f"{_file_name(run.run_id)}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    rows = events = rewards = 0
    with gzip.open(partial, "wt", encoding="utf-8") as out:
        header = {"format": FORMAT, "run": run.run_id, "campaign": run.campaign}
        out.write(_line({"kind": "run", **header, "ended_at": run.ended_at}))
        for sends in _chunks(db, run.run_id):
            for send in sends:
                rows += 1
                events += len(send["events"])
                rewards += send["reward"] is not None
                out.write(_line({"kind": "send", **send}))
        out.write(_line({"kind": "end", "sends": rows, "events": events, "rewards": rewards}))
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, path)
    fsync_directory(path.parent)
    with session_scope(db) as session:
        ids = select(LEDGER.c.id).where(LEDGER.c.run_id == run.run_id).scalar_subquery()
        session.execute(delete(EVENTS).where(EVENTS.c.send_id.in_(ids)))
        session.execute(delete(REWARDS).where(REWARDS.c.send_id.in_(ids)))
        left: Any = session.execute(delete(LEDGER).where(LEDGER.c.run_id == run.run_id))
        session.execute(
            update(RUNS)
            .where(RUNS.c.id == run.run_id)
            .values(status=ARCHIVED, error=f"rows archived to {path}"[:2000])
        )
        if int(left.rowcount or 0) != rows:  # rows added since it was read: keep them
            raise RuntimeError(
                f"run {run.run_id} changed while it was archived ({rows} rows written, "
                f"{left.rowcount} found): nothing deleted; archive again"
            )
    return ArchivedRun(run.run_id, run.campaign, run.ended_at, rows, events, rewards, path)


def read_archive(path: Path) -> Iterator[dict[str, Any]]:
    """The lines of an archive file (``run``, each ``send``, ``end``), as written."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def _chunks(db: SAEngine, run_id: str) -> Iterator[list[dict[str, Any]]]:
    """The run's ledger rows in id order, ``CHUNK`` at a time, each with its events and
    reward (only the kept columns)."""
    last = 0
    columns = [row_offered() if name == "offered" else LEDGER.c[name] for name in KEPT]
    while True:
        with session_scope(db) as session:
            found = session.execute(
                select(*columns)
                .where(LEDGER.c.run_id == run_id, LEDGER.c.id > last)
                .order_by(LEDGER.c.id)
                .limit(CHUNK)
            ).all()
            if not found:
                return
            sends = [dict(zip(KEPT, row, strict=True)) | {"events": []} for row in found]
            by_id = {send["id"]: send for send in sends}
            ids = list(by_id)
            for send_id, *values in session.execute(
                select(EVENTS.c.send_id, *(EVENTS.c[n] for n in EVENT_KEPT))
                .where(EVENTS.c.send_id.in_(ids))
                .order_by(EVENTS.c.id)
            ):
                by_id[send_id]["events"].append(dict(zip(EVENT_KEPT, values, strict=True)))
            rewards = {
                send_id: dict(zip(REWARD_KEPT, values, strict=True))
                for send_id, *values in session.execute(
                    select(REWARDS.c.send_id, *(REWARDS.c[n] for n in REWARD_KEPT)).where(
                        REWARDS.c.send_id.in_(ids)
                    )
                )
            }
        for send in sends:
            send["reward"] = rewards.get(send["id"])
        last = ids[-1]
        yield sends


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":")) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    raise TypeError(f"cannot archive a {type(value).__name__}")


def _safe(name: str) -> str:
    """``name`` as one file name: what is not a letter, digit, ``.``, ``-`` or ``_``
    becomes ``_`` (a run id holds ``@`` and ``:``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned or "_"


def _file_name(run_id: str) -> str:
    """The run's file name: readable, and told apart from any other run's by a hash of
    the id (two ids may clean to the same name)."""
    return f"{_safe(run_id)[:150]}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"
