"""``RunLedger``: one worker's view of one run's ledger, with every transition as a method.

Each transition is one guarded statement (or one per batch): it names the state the row
leaves and, for a row a worker holds, the owner, so a row another worker took over (or
finalized) is never overwritten. The state diagram is in ``engine/ledger/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from engine.db import insert_ignore, insert_returning, lock_campaign, session_scope, upsert
from engine.errors import CampaignBusyError, TailormailError
from engine.ledger.archive import ARCHIVED
from engine.ledger.journal import Journal
from engine.ledger.lease import LeaseKeeper, Worker
from engine.ledger.recovery import reconcile_unknown, recover, settle
from engine.ledger.statements import (
    HELD,
    LEDGER,
    answered,
    apply_outcomes,
    hand_over_rows,
    held_by,
    refresh_statistics,
)
from engine.models import (
    FailureClass,
    LedgerRow,
    LedgerStatus,
    RunRow,
    VariantRow,
    as_utc,
    utcnow,
)
from engine.types import DeliveryBackend, Message, SendResult

if TYPE_CHECKING:
    from engine.app import Engine


class ClaimedRow:
    """A row as this worker inserted it: its columns as attributes, with its new id.

    No second query reads it back, and it is no ORM object: a ``LedgerRow`` built without
    validation (``model_construct``) still cost ~0.05 ms a row, 5% of a run.
    """

    id: int
    recipient_id: str
    decision_id: str
    variant: str | None
    items: list[str] | None

    def __init__(self, values: dict[str, Any], send_id: int) -> None:
        self.__dict__.update(values)
        self.id = send_id


ANALYZE_EVERY = 20_000
"""Ledger rows a worker inserts between two refreshes of the ledger's statistics."""


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
        self._unanalyzed = 0  # rows this worker inserted since it last refreshed statistics
        # Told each batch's outcomes inside ``record``'s transaction (the releaser queues
        # the status webhooks of triggered alerts there: an outcome stored is one reported).
        self.on_record: Callable[[Session, Sequence[dict[str, Any]]], None] | None = None

    # -- the run ---------------------------------------------------------------------------
    def open(
        self, scheduled_for: datetime | None, variants: Sequence[dict[str, Any]]
    ) -> str | None:
        """Mark the run running, sync its variants, start this worker, settle dead ones;
        returns the status the run had before (None: a new run).

        Raises ``CampaignBusyError`` (and writes nothing) while another run of the
        campaign has a live worker: two runs at once would each pass the frequency cap.
        """
        now = utcnow()
        with session_scope(self.db) as session:
            row = {
                "id": self.run_id,
                "campaign": self.campaign,
                "scheduled_for": as_utc(scheduled_for) if scheduled_for else None,
                "status": "running",
                "started_at": now,
            }
            # The insert is this transaction's first write: on SQLite it takes the write
            # lock, and on PostgreSQL the campaign's lock is taken next, so of two runs
            # opening at once the second checks only after the first has committed.
            created = insert_ignore(session, RunRow, [row])
            lock_campaign(session, self.campaign)
            self._refuse_if_busy(session, now)
            status = select(col(RunRow.status)).where(col(RunRow.id) == self.run_id)
            before = None if created else session.scalar(status)
            if before == ARCHIVED:  # its rows are gone: everyone would look unsent
                raise TailormailError(
                    f"run {self.run_id} was archived (`tailormail archive`): it cannot be "
                    "resumed; send the campaign as a new run"
                )
            session.execute(
                update(RunRow)
                .where(col(RunRow.id) == self.run_id)
                .values(status="running", error=None, finished_at=None, heartbeat_at=now)
            )
            upsert(session, VariantRow, variants, key=["campaign", "key"])
        self.join()
        return before

    def _refuse_if_busy(self, session: Session, now: datetime) -> None:
        """Raise ``CampaignBusyError`` if another run of the campaign has a live worker."""
        lease = self.keeper.lease
        busy = session.execute(
            select(col(RunRow.id), col(RunRow.heartbeat_at))
            .where(col(RunRow.campaign) == self.campaign, col(RunRow.id) != self.run_id)
            .where(col(RunRow.status) == "running", col(RunRow.heartbeat_at) > now - lease)
            .order_by(col(RunRow.heartbeat_at).desc())
        ).first()
        if busy is not None:
            other, beat = busy
            assert beat is not None  # the query selects only runs heard from lately
            ago = max((now - as_utc(beat)).total_seconds(), 0)  # another host's clock
            raise CampaignBusyError(
                f"campaign {self.campaign!r} is being sent by run {other} (its workers were "
                f"heard from {ago:.0f} s ago): one run of a campaign at a time, so nobody "
                f"gets both. Wait for it to finish, or add this process to it with "
                f"`tailormail send {self.campaign} --run {other}`. If its process is gone, "
                f"this clears {lease.total_seconds():.0f} s after its last heartbeat "
                "(delivery.lease_seconds)"
            )

    def join(self) -> None:
        """Start this worker on an open run (``open`` calls it; a shard of a run opened
        elsewhere calls it alone): journal, lease keeper, dead workers' rows settled."""
        self.journal.open()
        self.keeper.start()
        self._live = True
        self.recover()
        self.reconcile_unknown()

    def leave(self) -> None:
        """Settle the rows this worker still holds and release it; the run stays as is."""
        if self._live:
            self._live = False
            self.keeper.stop()
            try:
                settle(self.db, self.run_id, self.owner, self.journal.state())
            except BaseException:
                self.journal.close(discard=False)  # the evidence, for whoever recovers
                raise
            self.journal.close(discard=True)

    def close(self, status: str, error: str | None = None) -> None:
        """Settle the rows this worker still holds, release it, and mark the run ``status``.

        The run is marked even when settling fails (a journal cut short by Ctrl-C): its
        rows then stay with the journal kept, for whoever resumes, and the error rises."""
        try:
            self.leave()
        finally:
            with session_scope(self.db) as session:
                session.execute(
                    update(RunRow)
                    .where(col(RunRow.id) == self.run_id)
                    .values(status=status, finished_at=utcnow(), error=error and error[:2000])
                )

    def pin_model(self, version: str) -> str:
        """Record the model ``version`` the run decides with, unless one is recorded
        already (a resumed run keeps its first); returns the recorded one."""
        with session_scope(self.db) as session:
            session.execute(
                update(RunRow)
                .where(col(RunRow.id) == self.run_id)
                .where(col(RunRow.model_version).is_(None))
                .values(model_version=version)
            )
        return self.model_version() or ""

    def model_version(self) -> str | None:
        """The model version the run pinned (None: not pinned, as in runs before pins)."""
        with session_scope(self.db) as session:
            stmt = select(col(RunRow.model_version)).where(col(RunRow.id) == self.run_id)
            return session.scalar(stmt)

    def pin_offered(self, offered: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Record ``offered`` as the run's variants unless it has some; return the run's.

        Its rows offered these store no ``offered`` of their own; a run resumed after the
        campaign file changed its variants finds others here and its rows keep theirs.
        """
        with session_scope(self.db) as session:
            session.execute(
                update(RunRow)
                .where(col(RunRow.id) == self.run_id, col(RunRow.offered).is_(None))
                .values(offered=offered)
            )
            stmt = select(col(RunRow.offered)).where(col(RunRow.id) == self.run_id)
            pinned: list[dict[str, Any]] | None = session.scalar(stmt)
            return pinned

    def record_shards(self, shards: int) -> None:
        """Note that the run was split into ``shards`` shards (``tailormail runs``)."""
        with session_scope(self.db) as session:
            session.execute(
                update(RunRow).where(col(RunRow.id) == self.run_id).values(shards=shards)
            )

    def rows_written(self) -> int:
        """How many ledger rows the run has (every worker's): its progress."""
        with session_scope(self.db) as session:
            stmt = select(func.count()).where(LEDGER.c.run_id == self.run_id)
            return int(session.scalar(stmt) or 0)

    def exists(self) -> bool:
        """Whether the run has been opened (its row is there)."""
        with session_scope(self.db) as session:
            return session.get(RunRow, self.run_id) is not None

    def counts(self) -> dict[str, int]:
        """How many of the run's rows are in each state (every worker's)."""
        with session_scope(self.db) as session:
            stmt = (
                select(LEDGER.c.status, func.count())
                .where(LEDGER.c.run_id == self.run_id)
                .group_by(LEDGER.c.status)
            )
            return {str(status): int(n) for status, n in session.execute(stmt).all()}

    def recipients_done(self, recipient_ids: Sequence[str]) -> set[str]:
        """Those of ``recipient_ids`` (an audience page: in the database's id order) that
        already have a row in this run.

        The page's first and last ids bound the lookup to one range of the ledger's
        (run, recipient) index. With the list alone, PostgreSQL's planner, whose figures
        for the ledger lag behind a run that is filling it, read every row of the run for
        each page: a cost that grew with the run (13% of a 100,000-recipient run's time).
        """
        if not recipient_ids:
            return set()
        with session_scope(self.db) as session:
            stmt = select(LEDGER.c.recipient_id).where(
                LEDGER.c.run_id == self.run_id,
                LEDGER.c.recipient_id.between(recipient_ids[0], recipient_ids[-1]),
                LEDGER.c.recipient_id.in_(list(recipient_ids)),
            )
            return set(session.scalars(stmt).all())

    # -- per batch -------------------------------------------------------------------------
    def claim(self, rows: Sequence[dict[str, Any]]) -> tuple[list[ClaimedRow], int]:
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
            landed = insert_returning(session, LedgerRow, stamped, "id", "decision_id", "status")
        self._unanalyzed += len(landed)
        if self._unanalyzed >= ANALYZE_EVERY:
            self._unanalyzed = 0
            refresh_statistics(self.db)
        by_decision = {row["decision_id"]: row for row in stamped}
        owned = [
            ClaimedRow(by_decision[decision_id], send_id)
            for send_id, decision_id, status in landed
            if status == LedgerStatus.PENDING
        ]
        skipped = sum(1 for *_, status in landed if status == LedgerStatus.SKIPPED)
        return owned, skipped

    def hand_over(self, messages: Sequence[Message]) -> list[Message]:
        """pending -> handed_over, with each message's links and id, committed before any
        of them goes; returns the messages whose rows this worker still held."""
        if not messages:
            return []
        changes = [
            {
                "b_id": m.send_id,
                "b_links": m.metadata.get("links"),
                "b_link_items": m.metadata.get("link_items") or None,
                "b_mid": m.message_id,
                "b_ref": m.send_ref,
            }
            for m in messages
        ]
        with session_scope(self.db) as session:
            moved = hand_over_rows(session, self.owner, self.keeper.expiry(), changes)
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
            settle(self.db, self.run_id, self.owner, self.journal.state(), in_flight=reason)
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
        changes = [answered(r.send_id, LedgerStatus.HANDED_OVER, r, now) for r in results]
        if changes:
            with session_scope(self.db) as session:
                apply_outcomes(session, changes, self.owner)
                if self.on_record is not None:
                    self.on_record(session, changes)
        self.journal.reset()
        return [str(change["b_status"]) for change in changes]

    def fail(self, send_ids: Sequence[int], error: str, *, fixable: bool = False) -> None:
        """pending -> failed: these rows' messages could not be built (``fixable``: the
        cause is ours, a template or the configuration, so a resumed run retries them)
        or are not retried (a recipient who left the audience: for good)."""
        failure = FailureClass.FIXABLE if fixable else None
        with session_scope(self.db) as session:
            session.execute(
                update(LEDGER)
                .where(LEDGER.c.id.in_(list(send_ids)), held_by(self.owner))
                .where(LEDGER.c.status == LedgerStatus.PENDING)
                .values(
                    status=LedgerStatus.FAILED,
                    error=error[:2000],
                    failure=failure,
                    lease_expires=None,
                )
            )

    def reclaim_deferred(self, *, fixable: bool = False) -> list[LedgerRow]:
        """deferred -> pending (and, with ``fixable``, failed for a fixable cause ->
        pending): take this run's rows that never left to retry, with the decision as
        logged. A row the recipient's server refused (failed, no class) stays failed."""
        retry = LEDGER.c.status == LedgerStatus.DEFERRED
        if fixable:
            failed = LEDGER.c.status == LedgerStatus.FAILED
            retry = or_(retry, and_(failed, LEDGER.c.failure == FailureClass.FIXABLE))
        with session_scope(self.db) as session:
            ids = list(
                session.scalars(
                    update(LEDGER)
                    .where(LEDGER.c.run_id == self.run_id, retry)
                    .values(
                        status=LedgerStatus.PENDING,
                        error=None,
                        failure=None,
                        owner=self.owner,
                        lease_expires=self.keeper.expiry(),
                    )
                    .returning(LEDGER.c.id)
                ).all()
            )
        return self._rows(ids)

    # -- other workers ---------------------------------------------------------------------
    def recover(self) -> int:
        """Settle the rows of this run that dead workers held; returns how many settled."""
        return recover(self.db, self.run_id, self.worker, self.journal_dir)

    def reconcile_unknown(self) -> int:
        """unknown -> sent | deferred, when the backend can tell (the outbox can)."""
        return reconcile_unknown(self.engine, self.run_id)

    # -- helpers ---------------------------------------------------------------------------
    def _renew(self, expiry: datetime) -> None:
        # Rows the sending thread has locked right now are skipped (it is moving them on):
        # waiting for them could deadlock with its batch update on PostgreSQL.
        held = (
            select(LEDGER.c.id)
            .where(LEDGER.c.owner == self.owner, LEDGER.c.status.in_(HELD))
            .with_for_update(skip_locked=True)
        )
        with session_scope(self.db) as session:
            session.execute(  # the run's heartbeat: a live worker sends it
                update(RunRow).where(col(RunRow.id) == self.run_id).values(heartbeat_at=utcnow())
            )
            ids = list(session.scalars(held).all())
            if ids:
                session.execute(
                    update(LEDGER)
                    .where(LEDGER.c.id.in_(ids), LEDGER.c.owner == self.owner)
                    .values(lease_expires=expiry)
                )

    def _rows(self, ids: Sequence[int]) -> list[LedgerRow]:
        if not ids:
            return []
        with session_scope(self.db) as session:
            stmt = select(LedgerRow).where(col(LedgerRow.id).in_(list(ids)))
            return list(session.scalars(stmt).all())
