"""Settling the rows of a worker that stopped holding them, and reconciling unknown ones.

A worker stops holding its rows when it closes, when its backend raises, or when it dies;
a dead worker's rows are settled by whichever worker next opens the run (see
``engine/ledger/lease.py`` for when a worker counts as dead).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.engine import Engine as SAEngine

from engine.db import session_scope
from engine.ledger.journal import JournalState, Liveness, adopt, dead_journals
from engine.ledger.lease import Worker, expired
from engine.ledger.statements import (
    HELD,
    LEDGER,
    STATUS_FOR,
    answered,
    apply_outcomes,
    change,
    held_by,
)
from engine.models import LedgerStatus, utcnow
from engine.types import DeliveryBackend, SendResult

if TYPE_CHECKING:
    from engine.app import Engine

NEVER_LEFT = "interrupted before it reached the transport"
IN_FLIGHT = "interrupted while with the transport"
NO_JOURNAL = "interrupted after the hand-over (its worker's journal is not on this host)"
LEGACY = "interrupted before the outcome"


@dataclass(frozen=True)
class Fate:
    """Where a held row goes when its worker stops holding it."""

    status: str
    error: str | None
    result: SendResult | None = None


def fate(status: str, send_id: int, state: JournalState | None, legacy: bool = False) -> Fate:
    """The state a row held by a stopped worker settles in, given its journal (if any).

    A ``pending`` row never reached the transport (the hand-over is committed before the
    message goes), so it is deferred and sent again; a ``handed_over`` one takes the
    outcome its journal recorded, else ``unknown`` if it was in flight or nothing proves
    otherwise, else (a complete journal with no record of it) it is deferred too.
    ``legacy`` rows were pending before leases existed, when pending could mean sent.
    """
    if status == LedgerStatus.PENDING:
        return (
            Fate(LedgerStatus.UNKNOWN, LEGACY)
            if legacy
            else Fate(LedgerStatus.DEFERRED, NEVER_LEFT)
        )
    if state is not None:
        result = state.outcomes.get(send_id)
        if result is not None:
            return Fate(STATUS_FOR[result.status], result.error, result)
        if send_id in state.handed:
            return Fate(LedgerStatus.UNKNOWN, IN_FLIGHT)
        if state.complete:
            return Fate(LedgerStatus.DEFERRED, NEVER_LEFT)
    return Fate(LedgerStatus.UNKNOWN, NO_JOURNAL)


def settle(
    db: SAEngine,
    run_id: str,
    owner: str | None,
    state: JournalState | None,
    *,
    legacy: bool = False,
    in_flight: str | None = None,
) -> int:
    """Move every row ``owner`` holds in run ``run_id`` to its ``fate``; returns how many.

    ``in_flight`` replaces the reason given to rows that were with the transport (the
    backend's exception, when it raised).
    """
    with session_scope(db) as session:
        held = session.execute(
            select(LEDGER.c.id, LEDGER.c.status).where(
                LEDGER.c.run_id == run_id, held_by(owner), LEDGER.c.status.in_(HELD)
            )
        ).all()
        now, changes = utcnow(), []
        for send_id, status in held:
            end = fate(status, send_id, state, legacy)
            if end.result is not None:
                changes.append(answered(send_id, status, end.result, now))
                continue
            error = in_flight if in_flight and end.error == IN_FLIGHT else end.error
            changes.append(change(send_id, status, end.status, error, now))
        apply_outcomes(session, changes, owner)
    return len(held)


def recover(db: SAEngine, run_id: str, me: Worker, journal_dir: Path) -> int:
    """Settle the rows of run ``run_id`` that dead workers held; returns how many settled.

    A worker on this host is dead when its journal is no longer locked (its rows then
    settle exactly, from the journal); one elsewhere, when its lease has expired.
    """
    with session_scope(db) as session:
        holders = session.execute(
            select(LEDGER.c.owner, func.max(LEDGER.c.lease_expires))
            .where(LEDGER.c.run_id == run_id, LEDGER.c.status.in_(HELD))
            .group_by(LEDGER.c.owner)
        ).all()
    settled = 0
    for owner, expiry in holders:
        if owner != me.owner:
            settled += _recover_one(db, run_id, owner, expiry, journal_dir)
    _sweep(db, me.host, journal_dir)
    return settled


def _recover_one(
    db: SAEngine, run_id: str, owner: str | None, expiry: datetime | None, journal_dir: Path
) -> int:
    worker = Worker.parse(owner) if owner else None
    if worker is None:  # held since before leases existed
        return settle(db, run_id, owner, None, legacy=True)
    if worker.is_local():
        with adopt(journal_dir, worker.tag) as (liveness, state):
            if liveness == Liveness.DEAD:
                return settle(db, run_id, owner, state)
            if liveness == Liveness.LIVE:
                return 0
    return settle(db, run_id, owner, None) if expired(expiry) else 0


def _sweep(db: SAEngine, host: str, journal_dir: Path) -> None:
    """Delete dead workers' journals that hold nothing any more (their rows settled)."""
    for tag in dead_journals(journal_dir):
        owner = Worker(host, tag).owner
        with session_scope(db) as session:
            held = session.scalar(
                select(LEDGER.c.id)
                .where(LEDGER.c.owner == owner, LEDGER.c.status.in_(HELD))
                .limit(1)
            )
        if held is None:
            with adopt(journal_dir, tag):
                pass  # adopting a dead journal deletes it on the way out


def reconcile_unknown(engine: Engine, run_id: str) -> int:
    """unknown -> sent | deferred for run ``run_id``, if its backend can tell
    (``DeliveryBackend.reconcile``); returns how many rows it settled."""
    with session_scope(engine.db) as session:
        ids = list(
            session.scalars(
                select(LEDGER.c.id).where(
                    LEDGER.c.run_id == run_id, LEDGER.c.status == LedgerStatus.UNKNOWN
                )
            ).all()
        )
    if not ids:
        return 0
    backend = engine.make_backend()
    if type(backend).reconcile is DeliveryBackend.reconcile:
        return 0
    with backend:
        answers = backend.reconcile(ids)
    now = utcnow()
    changes = [answered(i, LedgerStatus.UNKNOWN, answers[i], now) for i in ids if i in answers]
    if changes:
        with session_scope(engine.db) as session:
            apply_outcomes(session, changes, None, any_owner=True)
    return len(changes)
