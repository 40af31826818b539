"""Releasing rows decided earlier and sent later: ``scheduled`` ledger rows whose
``release_at`` has come.

A reusable piece: a triggered alert waits here (``engine.sending.triggers``), and so will
anything else that decides now and sends at a chosen time. ``Releaser.release_due`` takes
due rows in batches under this process's lease (scheduled -> pending, one guarded
statement per batch, so two releasers, on a leader and in an API process, or an old leader
and a new one, never take one row twice), checks each recipient again (suppressions,
forgotten addresses, caps, the campaign's audience, the eligibility hooks: a row no longer
eligible is skipped with the reason and its decision kept), and sends the rest through
the run's ordinary path: render, hand over, transmit, record. A release killed midway is
settled like any run's worker (``engine.ledger.recovery``): pending rows go back as
deferred, and the next pass takes those too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from engine.db import session_scope
from engine.feedback.status_webhooks import StatusEvent, enqueue_many
from engine.ledger import RunLedger
from engine.ledger.statements import LEDGER
from engine.models import LedgerStatus, TriggerRow, utcnow
from engine.sending.pipeline import CampaignRun
from engine.sending.run_effects import RunEffects
from engine.types import Message, Recipient, SendResult

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)
BATCH = 100
"""Rows a releaser takes under its lease at a time."""
RECOVER_SECONDS = 60.0
"""How often a long-lived releaser settles the rows of dead ones (lease-expired)."""
RETRY_SECONDS = 30.0
"""How often a releaser takes back its runs' deferred rows (a temporary failure) to retry."""
_IDLE_SECONDS = 300.0  # a run's worker unused this long is released (its lease keeper stops)


@dataclass
class ReleaseSummary:
    """What one ``release_due`` pass did."""

    released: int = 0  # rows taken from scheduled (or deferred) and sent on
    sent: int = 0
    skipped: int = 0  # no longer eligible at release
    failed: int = 0
    deferred: int = 0
    unknown: int = 0


@dataclass
class _ReleasedRow:
    """A row taken for release, as ``CampaignRun._deliver`` reads it (``HeldRow``)."""

    id: int
    recipient_id: str
    decision_id: str
    variant: str | None
    items: list[str] | None
    trigger_id: str
    event: dict[str, Any] | None = None


@dataclass
class _RunWorker:
    run: CampaignRun
    ledger: RunLedger
    used: float
    recovered: float
    reclaimed: float = float("-inf")


class Releaser:
    """Sends due ``scheduled`` rows, once, from any number of processes at a time.

    Each finished row (sent, failed, skipped) of a trigger queues its status webhooks
    (``engine.feedback.status_webhooks``). ``release_due`` takes one thread at a time
    (``run_forever`` is that thread).
    """

    def __init__(self, engine: Engine, *, batch: int = BATCH) -> None:
        """Nothing runs until ``release_due`` (or ``run_forever``)."""
        self.engine = engine
        self.batch = batch
        self._workers: dict[str, _RunWorker] = {}
        # The rows of the batch being sent: send id -> (trigger id, campaign, API key id).
        self._sending: dict[int, tuple[str, str, str | None]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- the pass -------------------------------------------------------------------------
    def release_due(self, now: datetime | None = None) -> ReleaseSummary:
        """Send every row due by ``now`` (and every deferred row of runs with due rows or
        a worker here); returns what happened."""
        summary = ReleaseSummary()
        with self._lock:
            for run_id, campaign in self._due_runs(now or utcnow()):
                worker = self._worker(run_id, campaign)
                if worker is None:
                    continue
                self._release_run(worker, summary, now)
            self._retire_idle()
        return summary

    def _due_runs(self, now: datetime) -> list[tuple[str, str]]:
        """The runs with rows due now, plus the runs this process works on (their
        deferred rows)."""
        stmt = (
            select(LEDGER.c.run_id, LEDGER.c.campaign)
            .where(LEDGER.c.status == LedgerStatus.SCHEDULED, LEDGER.c.release_at <= now)
            .distinct()
        )
        with session_scope(self.engine.db) as session:
            due = {(str(r), str(c)) for r, c in session.execute(stmt).all()}
        due |= {(w.run.run_id, w.run.campaign.name) for w in self._workers.values()}
        return sorted(due)

    def _worker(self, run_id: str, campaign_name: str) -> _RunWorker | None:
        worker = self._workers.get(run_id)
        if worker is not None:
            worker.used = time.monotonic()
            if worker.used - worker.recovered > RECOVER_SECONDS:
                worker.recovered = worker.used
                worker.ledger.recover()
            return worker
        campaign = self.engine.campaigns.get(campaign_name)
        if campaign is None:
            log.warning("run %s: its campaign %r is no longer configured", run_id, campaign_name)
            return None
        ledger = RunLedger(self.engine, run_id, campaign.name)
        effects = RunEffects(
            ledger=ledger,
            backend=self.engine.make_backend,
            shards=None,
            sent=self._message_sent,
            shares_recipe_fit=False,
        )
        run = CampaignRun(self.engine, campaign, run_id, effects)
        ledger.on_record = self._recorded
        ledger.join()  # journal, lease keeper; dead releasers' rows of this run settle
        now = time.monotonic()
        worker = self._workers[run_id] = _RunWorker(run, ledger, now, now)
        return worker

    def _recorded(self, session: Session, changes: Sequence[dict[str, Any]]) -> None:
        """Queue the status webhooks of a batch's sent and failed triggers, in the
        transaction that records them."""
        reports = []
        for change in changes:
            made = self._sending.get(int(change["b_id"]))
            status = str(change["b_status"])
            if made is None or status not in ("sent", "failed"):
                continue
            trigger_id, campaign, key_id = made
            reason = {} if status == "sent" else {"reason": change.get("b_error")}
            reports.append(StatusEvent(trigger_id, campaign, status, reason, key_id))
        enqueue_many(session, reports)

    def _message_sent(self, message: Message, result: SendResult) -> None:
        self.engine.pm.hook.message_sent(engine=self.engine, message=message, result=result)

    def _release_run(
        self, worker: _RunWorker, summary: ReleaseSummary, now: datetime | None
    ) -> None:
        run, ledger = worker.run, worker.ledger
        retry: list[Any] = []
        if time.monotonic() - worker.reclaimed >= RETRY_SECONDS:
            worker.reclaimed = time.monotonic()
            retry = ledger.reclaim_deferred()  # never left: sent again, same decision
        with ExitStack() as stack:
            deliver = run._delivery(stack)
            if retry:
                self._send(run, deliver, [self._held(r) for r in retry], summary)
            while True:
                rows = self._take(ledger, now or utcnow())
                if not rows:
                    return
                self._send(run, deliver, rows, summary)
                if len(rows) < self.batch:
                    return

    @staticmethod
    def _held(row: Any) -> _ReleasedRow:
        return _ReleasedRow(
            row.id, row.recipient_id, row.decision_id, row.variant, row.items, row.trigger_id
        )

    def _take(self, ledger: RunLedger, now: datetime) -> list[_ReleasedRow]:
        """scheduled -> pending: up to a batch of due rows, under this worker's lease."""
        due = (
            select(LEDGER.c.id)
            .where(LEDGER.c.run_id == ledger.run_id)
            .where(LEDGER.c.status == LedgerStatus.SCHEDULED, LEDGER.c.release_at <= now)
            .order_by(LEDGER.c.release_at)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        with session_scope(self.engine.db) as session:
            ids = list(session.scalars(due).all())
            if not ids:
                return []
            taken = session.execute(
                update(LEDGER)
                .where(LEDGER.c.id.in_(ids), LEDGER.c.status == LedgerStatus.SCHEDULED)
                .values(
                    status=LedgerStatus.PENDING,
                    owner=ledger.owner,
                    lease_expires=ledger.keeper.expiry(),
                )
                .returning(
                    LEDGER.c.id,
                    LEDGER.c.recipient_id,
                    LEDGER.c.decision_id,
                    LEDGER.c.variant,
                    LEDGER.c["items"],
                    LEDGER.c.trigger_id,
                )
            ).all()
        return [_ReleasedRow(*row) for row in taken]

    def _send(
        self,
        run: CampaignRun,
        deliver: Callable[[Sequence[Any], dict[str, Recipient]], None],
        rows: list[_ReleasedRow],
        summary: ReleaseSummary,
    ) -> None:
        """Check each row's recipient again, skip the ineligible, send the rest."""
        summary.released += len(rows)
        people = run._still_in_audience(sorted({r.recipient_id for r in rows}))
        reasons = self.engine.ineligible(run.campaign, list(people.values()))
        made = self._made([r.trigger_id for r in rows if r.trigger_id])
        keep: list[_ReleasedRow] = []
        withheld: dict[int, StatusEvent] = {}
        name = run.campaign.name
        for row in rows:
            reason = (
                reasons.get(row.recipient_id)
                if row.recipient_id in people
                else "left the campaign's audience"
            )
            data, key_id = made.get(row.trigger_id, ({}, None))
            if reason:
                skipped = {"reason": reason}
                withheld[row.id] = StatusEvent(row.trigger_id, name, "skipped", skipped, key_id)
            else:
                row.event = data
                keep.append(row)
                self._sending[row.id] = (row.trigger_id, name, key_id)
        if withheld:
            self._withhold(run.ledger, withheld)
            summary.skipped += len(withheld)
        if keep:
            run._prepare_models(people[keep[0].recipient_id])
            try:
                deliver(keep, people)
            except Exception:  # the rows settled (fixable failure, or from the journal)
                log.exception("run %s: a release batch stopped", run.run_id)
            finally:
                self._sending.clear()
        self._count(rows, summary)

    def _made(self, trigger_ids: Sequence[str]) -> dict[str, tuple[dict[str, Any], str | None]]:
        """Each trigger's event data and the API key that made it."""
        if not trigger_ids:
            return {}
        table = TriggerRow.__table__  # type: ignore[attr-defined]
        with session_scope(self.engine.db) as session:
            stmt = select(table.c.id, table.c.data, table.c.key_id).where(
                table.c.id.in_(list(trigger_ids))
            )
            return {str(i): (dict(data or {}), key) for i, data, key in session.execute(stmt)}

    @staticmethod
    def _withhold(ledger: Any, skipped: dict[int, StatusEvent]) -> None:
        """pending -> skipped: rows whose recipients are no longer eligible at release,
        with their status webhooks; the decision stays as logged (it was never acted on:
        learning skips it)."""
        with session_scope(ledger.db) as session:
            for send_id, event in skipped.items():
                session.execute(
                    update(LEDGER)
                    .where(LEDGER.c.id == send_id, LEDGER.c.owner == ledger.owner)
                    .where(LEDGER.c.status == LedgerStatus.PENDING)
                    .values(
                        status=LedgerStatus.SKIPPED,
                        skip_reason=str(event.data["reason"])[:200],
                        lease_expires=None,
                    )
                )
            enqueue_many(session, [e for e in skipped.values() if e.trigger_id])

    def _count(self, rows: list[_ReleasedRow], summary: ReleaseSummary) -> None:
        """Count the batch's outcomes as stored (a batch cut short settled some rows from
        the journal; its status webhooks went with the outcomes)."""
        with session_scope(self.engine.db) as session:
            stmt = (
                select(LEDGER.c.status, func.count())
                .where(LEDGER.c.id.in_([r.id for r in rows]))
                .group_by(LEDGER.c.status)
            )
            for status, n in session.execute(stmt).all():
                if status in ("sent", "failed", "deferred", "unknown"):
                    setattr(summary, status, getattr(summary, status) + int(n))

    def _retire_idle(self) -> None:
        now = time.monotonic()
        for run_id, worker in list(self._workers.items()):
            if now - worker.used > _IDLE_SECONDS:
                del self._workers[run_id]
                worker.ledger.leave()

    # -- as a service ---------------------------------------------------------------------
    def wake(self) -> None:
        """Release now (a trigger due now was just accepted)."""
        self._wake.set()

    def run_forever(self, interval: float = 1.0) -> None:
        """Release due rows every ``interval`` seconds, or at once when woken, until
        ``stop``."""
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.release_due()
            except Exception:  # a database outage: the next pass tries again
                log.exception("releasing due rows failed; retrying in %.0f s", interval)
        self.close()

    def stop(self) -> None:
        """Stop ``run_forever`` after its current pass."""
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """Release every run worker (settling whatever they hold)."""
        with self._lock:
            for worker in self._workers.values():
                worker.ledger.leave()
            self._workers.clear()
