"""``RunLedger``: one worker's view of one run's ledger, with every transition as a method.

Each transition is one guarded statement (or one per batch): it names the state the row
leaves and, for a row a worker holds, the owner, so a row another worker took over (or
finalized) is never overwritten. The state diagram is in ``engine/ledger/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlmodel import col

from engine.db import insert_ignore, insert_returning, session_scope, upsert
from engine.ledger.journal import Journal, JournalState, Liveness, adopt, dead_journals
from engine.ledger.lease import LeaseKeeper, Worker, expired
from engine.models import LedgerRow, LedgerStatus, RunRow, VariantRow, as_utc, utcnow
from engine.types import DeliveryBackend, Message, SendResult, SendStatus

if TYPE_CHECKING:
    from engine.app import Engine

STATUS_FOR = {
    SendStatus.SENT: LedgerStatus.SENT,
    SendStatus.TEMPORARY_FAILURE: LedgerStatus.DEFERRED,
    SendStatus.PERMANENT_FAILURE: LedgerStatus.FAILED,
    SendStatus.UNKNOWN: LedgerStatus.UNKNOWN,
}
"""The ledger state a delivery outcome leads to."""

HELD = (LedgerStatus.PENDING, LedgerStatus.HANDED_OVER)
"""The states in which a row belongs to a worker (under its lease)."""

NEVER_LEFT = "interrupted before it reached the transport"
IN_FLIGHT = "interrupted while with the transport"
NO_JOURNAL = "interrupted after the hand-over (its worker's journal is not on this host)"
LEGACY = "interrupted before the outcome"

_T = LedgerRow.__table__  # type: ignore[attr-defined]


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


def _held_by(owner: str | None) -> ColumnElement[bool]:
    guard: ColumnElement[bool] = _T.c.owner.is_(None) if owner is None else _T.c.owner == owner
    return guard


def _change(
    send_id: int,
    leaving: str,
    status: str,
    error: str | None,
    now: datetime,
    result: SendResult | None = None,
) -> dict[str, Any]:
    """Parameters of ``_outcome_statement`` for one row."""
    return {
        "b_id": send_id,
        "b_from": leaving,
        "b_status": status,
        "b_provider": result.provider_id if result else None,
        "b_error": error[:2000] if error else None,
        "b_sent_at": now if status == LedgerStatus.SENT else None,
    }


def _answered(send_id: int, leaving: str, result: SendResult, now: datetime) -> dict[str, Any]:
    """``_change`` for a row the transport answered for."""
    return _change(send_id, leaving, STATUS_FOR[result.status], result.error, now, result)


class RunLedger:
    """The ledger rows of one run as one worker holds them.

    ``open`` starts the worker (journal, lease keeper) and settles rows of dead workers;
    then per batch: ``claim`` -> ``hand_over`` -> ``transmit`` -> ``record``; ``close``
    settles whatever this worker still holds and releases it.
    """

    def __init__(self, engine: Engine, run_id: str, campaign: str) -> None:
        """Nothing is written until ``open``."""
        settings = engine.settings
        self.engine = engine
        self.db = engine.db
        self.run_id = run_id
        self.campaign = campaign
        self.worker = Worker.new()
        self.owner = self.worker.owner
        self.journal_dir = settings.path(settings.delivery.journal_dir)
        self.journal = Journal(self.journal_dir, self.worker.tag)
        self.keeper = LeaseKeeper(timedelta(seconds=settings.delivery.lease_seconds), self._renew)
        self._live = False

    # -- the run ---------------------------------------------------------------------------
    def open(self, scheduled_for: datetime | None, variants: Sequence[dict[str, Any]]) -> None:
        """Mark the run running, sync its variants, start this worker, settle dead ones."""
        with session_scope(self.db) as session:
            row = {
                "id": self.run_id,
                "campaign": self.campaign,
                "scheduled_for": as_utc(scheduled_for) if scheduled_for else None,
                "status": "running",
                "started_at": utcnow(),
            }
            insert_ignore(session, RunRow, [row])
            session.execute(
                update(RunRow)
                .where(col(RunRow.id) == self.run_id)
                .values(status="running", error=None, finished_at=None)
            )
            upsert(session, VariantRow, variants, key=["campaign", "key"])
        self.journal.open()
        self.keeper.start()
        self._live = True
        self.recover()
        self.reconcile_unknown()

    def close(self, status: str, error: str | None = None) -> None:
        """Settle the rows this worker still holds, release it, and mark the run ``status``."""
        if self._live:
            self._live = False
            self.keeper.stop()
            try:
                self._settle(self.owner, self.journal.state())
            except BaseException:
                self.journal.close(discard=False)  # the evidence, for whoever recovers
                raise
            self.journal.close(discard=True)
        with session_scope(self.db) as session:
            session.execute(
                update(RunRow)
                .where(col(RunRow.id) == self.run_id)
                .values(status=status, finished_at=utcnow(), error=error and error[:2000])
            )

    def recipients_done(self, recipient_ids: Sequence[str]) -> set[str]:
        """Those of ``recipient_ids`` that already have a row in this run."""
        with session_scope(self.db) as session:
            stmt = select(_T.c.recipient_id).where(
                _T.c.run_id == self.run_id, _T.c.recipient_id.in_(list(recipient_ids))
            )
            return set(session.scalars(stmt).all())

    # -- per batch -------------------------------------------------------------------------
    def claim(self, rows: Sequence[dict[str, Any]]) -> tuple[list[LedgerRow], int]:
        """(none) -> pending | skipped: insert the batch's rows under this worker's lease.

        Returns the pending rows this worker now holds (a row another worker inserted
        first is not among them) and how many skipped rows landed.
        """
        expiry = self.keeper.expiry()
        stamped = [
            dict(row)
            | {
                "owner": self.owner,
                "lease_expires": expiry if row["status"] == LedgerStatus.PENDING else None,
            }
            for row in rows
        ]
        with session_scope(self.db) as session:
            landed = insert_returning(session, LedgerRow, stamped, "id", "status")
        owned = [send_id for send_id, status in landed if status == LedgerStatus.PENDING]
        skipped = sum(1 for _, status in landed if status == LedgerStatus.SKIPPED)
        return self._rows(owned), skipped

    def hand_over(self, messages: Sequence[Message]) -> list[Message]:
        """pending -> handed_over, with each message's links and id, committed before any
        of them goes; returns the messages whose rows this worker still held."""
        if not messages:
            return []
        ids = [m.send_id for m in messages]
        with session_scope(self.db) as session:
            moved = set(
                session.scalars(
                    update(_T)
                    .where(_T.c.id.in_(ids), _held_by(self.owner))
                    .where(_T.c.status == LedgerStatus.PENDING)
                    .values(status=LedgerStatus.HANDED_OVER, lease_expires=self.keeper.expiry())
                    .returning(_T.c.id)
                ).all()
            )
            changes = [
                {
                    "b_id": m.send_id,
                    "b_links": m.metadata.get("links"),
                    "b_link_items": m.metadata.get("link_items") or None,
                    "b_mid": m.message_id,
                }
                for m in messages
                if m.send_id in moved
            ]
            if changes:
                session.execute(
                    update(_T)
                    .where(_T.c.id == bindparam("b_id"))
                    .values(
                        links=bindparam("b_links"),
                        link_items=bindparam("b_link_items"),
                        message_id=bindparam("b_mid"),
                    ),
                    changes,
                )
        return [m for m in messages if m.send_id in moved]

    def transmit(self, backend: DeliveryBackend, messages: Sequence[Message]) -> list[SendResult]:
        """Give ``messages`` (handed over) to ``backend``, journaling each hand-over.

        A backend that reports each message (``reports_handover``) is journaled message by
        message; any other one is journaled as a whole batch before ``send``. If ``send``
        raises, the rows settle from the journal (sent, in flight: unknown, never handed:
        deferred) and the exception goes on.
        """
        backend.observer = self.journal
        if not backend.reports_handover:
            for message in messages:
                self.journal.handing_over(message)
        try:
            results = backend.send(messages) if messages else []
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._settle(self.owner, self.journal.state(), in_flight=reason)
            self.journal.reset()
            raise
        if not backend.reports_handover:
            for result in results:
                self.journal.outcome(result)
        return results

    def record(self, results: Sequence[SendResult]) -> list[str]:
        """handed_over -> sent | deferred | failed | unknown: the batch's outcomes, in one
        statement; returns the state of each row, in order."""
        now = utcnow()
        changes = [_answered(r.send_id, LedgerStatus.HANDED_OVER, r, now) for r in results]
        if changes:
            with session_scope(self.db) as session:
                session.execute(_outcome_statement(self.owner), changes)
        self.journal.reset()
        return [str(change["b_status"]) for change in changes]

    def fail(self, send_ids: Sequence[int], error: str) -> None:
        """pending -> failed: these rows' messages could not be built (or not retried)."""
        with session_scope(self.db) as session:
            session.execute(
                update(_T)
                .where(_T.c.id.in_(list(send_ids)), _held_by(self.owner))
                .where(_T.c.status == LedgerStatus.PENDING)
                .values(status=LedgerStatus.FAILED, error=error[:2000], lease_expires=None)
            )

    def reclaim_deferred(self) -> list[LedgerRow]:
        """deferred -> pending: take this run's deferred rows (they never left) to retry,
        with the decision as logged."""
        with session_scope(self.db) as session:
            ids = list(
                session.scalars(
                    update(_T)
                    .where(_T.c.run_id == self.run_id, _T.c.status == LedgerStatus.DEFERRED)
                    .values(
                        status=LedgerStatus.PENDING,
                        error=None,
                        owner=self.owner,
                        lease_expires=self.keeper.expiry(),
                    )
                    .returning(_T.c.id)
                ).all()
            )
        return self._rows(ids)

    # -- other workers ---------------------------------------------------------------------
    def recover(self) -> int:
        """Settle the rows of this run that dead workers held; returns how many settled.

        A worker on this host is dead when its journal is no longer locked (the rows then
        settle exactly, from the journal); elsewhere, when its lease has expired.
        """
        with session_scope(self.db) as session:
            holders = session.execute(
                select(_T.c.owner, func.max(_T.c.lease_expires))
                .where(_T.c.run_id == self.run_id, _T.c.status.in_(HELD))
                .group_by(_T.c.owner)
            ).all()
        settled = 0
        for owner, expiry in holders:
            if owner != self.owner:
                settled += self._recover(owner, expiry)
        self._sweep()
        return settled

    def _recover(self, owner: str | None, expiry: datetime | None) -> int:
        worker = Worker.parse(owner) if owner else None
        if worker is None:  # held since before leases existed
            return self._settle(owner, None, legacy=True)
        if worker.is_local():
            with adopt(self.journal_dir, worker.tag) as (liveness, state):
                if liveness == Liveness.DEAD:
                    return self._settle(owner, state)
                if liveness == Liveness.LIVE:
                    return 0
        return self._settle(owner, None) if expired(expiry) else 0

    def _sweep(self) -> None:
        """Delete dead workers' journals that hold nothing any more (their rows settled)."""
        for tag in dead_journals(self.journal_dir):
            owner = Worker(self.worker.host, tag).owner
            with session_scope(self.db) as session:
                held = session.scalar(
                    select(_T.c.id).where(_T.c.owner == owner, _T.c.status.in_(HELD)).limit(1)
                )
            if held is None:
                with adopt(self.journal_dir, tag):
                    pass  # adopting a dead journal deletes it on the way out

    def reconcile_unknown(self) -> int:
        """unknown -> sent | deferred, for a backend that can tell (``reconcile``)."""
        with session_scope(self.db) as session:
            ids = list(
                session.scalars(
                    select(_T.c.id).where(
                        _T.c.run_id == self.run_id, _T.c.status == LedgerStatus.UNKNOWN
                    )
                ).all()
            )
        if not ids:
            return 0
        backend = self.engine.make_backend()
        if type(backend).reconcile is DeliveryBackend.reconcile:
            return 0
        with backend:
            answers = backend.reconcile(ids)
        now = utcnow()
        changes = [_answered(i, LedgerStatus.UNKNOWN, answers[i], now) for i in ids if i in answers]
        if changes:
            with session_scope(self.db) as session:
                session.execute(_outcome_statement(None, any_owner=True), changes)
        return len(changes)

    # -- helpers ---------------------------------------------------------------------------
    def _settle(
        self,
        owner: str | None,
        state: JournalState | None,
        *,
        legacy: bool = False,
        in_flight: str | None = None,
    ) -> int:
        """Move every row ``owner`` holds in this run to its ``fate``."""
        with session_scope(self.db) as session:
            held = session.execute(
                select(_T.c.id, _T.c.status).where(
                    _T.c.run_id == self.run_id, _held_by(owner), _T.c.status.in_(HELD)
                )
            ).all()
            now, changes = utcnow(), []
            for send_id, status in held:
                end = fate(status, send_id, state, legacy)
                if end.result is not None:
                    changes.append(_answered(send_id, status, end.result, now))
                    continue
                error = in_flight if in_flight and end.error == IN_FLIGHT else end.error
                changes.append(_change(send_id, status, end.status, error, now))
            if changes:
                session.execute(_outcome_statement(owner), changes)
        return len(held)

    def _renew(self, expiry: datetime) -> None:
        with session_scope(self.db) as session:
            session.execute(
                update(_T)
                .where(_T.c.owner == self.owner, _T.c.status.in_(HELD))
                .values(lease_expires=expiry)
            )

    def _rows(self, ids: Sequence[int]) -> list[LedgerRow]:
        if not ids:
            return []
        with session_scope(self.db) as session:
            stmt = select(LedgerRow).where(col(LedgerRow.id).in_(list(ids)))
            return list(session.scalars(stmt).all())


def _outcome_statement(owner: str | None, *, any_owner: bool = False) -> Any:
    """Per-row outcome, guarded on the state it leaves (and the holder, unless ``any_owner``)."""
    stmt = update(_T).where(_T.c.id == bindparam("b_id"), _T.c.status == bindparam("b_from"))
    if not any_owner:
        stmt = stmt.where(_held_by(owner))
    return stmt.values(
        status=bindparam("b_status"),
        provider_id=bindparam("b_provider"),
        error=bindparam("b_error"),
        sent_at=bindparam("b_sent_at"),
        lease_expires=None,
    )
