"""One run of a campaign sends at a time: two runs at once would each pass the frequency
cap (it counts sent rows), so everybody would get both emails.

A second run is refused while the first has a live worker (its heartbeat is younger than
a lease); resuming the same run from another process is still allowed, and a run whose
workers are gone stops blocking once its heartbeat is a lease old.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from kit.project import Project
from kit.sending import DEADLINE, smtp_project, start_send
from kit.smtp import serve
from sqlalchemy import update
from sqlmodel import Session as DBSession
from sqlmodel import col

from engine.app import Engine
from engine.errors import CampaignBusyError
from engine.ledger import RunLedger
from engine.models import LedgerRow, LedgerStatus, RunRow, as_utc, utcnow
from engine.sending.pipeline import run_id_for
from engine.sending.scheduler import retry_deferred, run_scheduled


class HeldInbox:
    """An SMTP server that holds every message in DATA until ``release`` is set."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.arrived.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        with self._lock:
            self.received.extend(address.lower() for address in envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def held_inbox() -> Iterator[tuple[HeldInbox, int]]:
    handler = HeldInbox()
    with serve(handler) as port:
        try:
            yield handler, port
        finally:
            handler.release.set()  # a held message would keep the server from stopping


def run_row(engine: Engine, run_id: str) -> RunRow | None:
    with DBSession(engine.db) as session:
        return session.get(RunRow, run_id)


def test_a_second_send_is_refused_while_the_first_is_sending_and_nobody_gets_both(
    project: Project, held_inbox: tuple[HeldInbox, int]
) -> None:
    handler, port = held_inbox
    engine = smtp_project(project, port, people=60)
    first = start_send(project, "--new-run", "first")
    try:
        # The first run is open and live: its first message is held at the server.
        assert handler.arrived.wait(DEADLINE), "the first run never reached the server"
        second = start_send(project, "--new-run", "second")
        _, errors = second.communicate(timeout=DEADLINE)
        message = errors.decode()
        assert second.returncode == 2, message
        assert "campaign 'alerts' is being sent by run first" in message
        assert "tailormail send alerts --run first" in message
        assert "Traceback" not in message
        assert run_row(engine, "second") is None  # refused before anything was written
    finally:
        handler.release.set()
    _, errors = first.communicate(timeout=DEADLINE)
    assert first.returncode == 0, errors.decode()
    received = Counter(handler.received)
    assert len(received) == 60 and set(received.values()) == {1}  # nobody got two
    finished = run_row(engine, "first")
    assert finished is not None and finished.status == "finished"


@pytest.fixture
def engine(sqlite_project: Project) -> Engine:
    return sqlite_project.engine()


def test_the_same_run_may_be_joined_and_another_waits_for_it_to_finish(engine: Engine) -> None:
    live = RunLedger(engine, "r1", "alerts")
    live.open(None, [])
    try:
        helper = RunLedger(engine, "r1", "alerts")  # a second worker on the same run
        helper.open(None, [])
        helper.leave()
        with pytest.raises(CampaignBusyError, match=r"being sent by run r1 \(its workers"):
            RunLedger(engine, "r2", "alerts").open(None, [])
        assert run_row(engine, "r2") is None
        RunLedger(engine, "r3", "digest").open(None, [])  # another campaign is not held up
    finally:
        live.close("finished")
    after = RunLedger(engine, "r2", "alerts")
    after.open(None, [])  # the first run finished: the next one starts
    after.close("finished")


def test_a_run_whose_workers_are_gone_stops_blocking_after_a_lease(engine: Engine) -> None:
    dead = RunLedger(engine, "r1", "alerts")
    dead.open(None, [])
    dead.keeper.stop()  # killed: the run stays "running", nobody renews its heartbeat
    dead.journal.close(discard=False)
    lease = dead.keeper.lease
    with DBSession(engine.db) as session:
        beat = utcnow() - lease + timedelta(seconds=5)  # heard from 5 s before it lapses
        session.execute(update(RunRow).where(col(RunRow.id) == "r1").values(heartbeat_at=beat))
        session.commit()
    with pytest.raises(CampaignBusyError, match=r"workers were heard from 5[456] s ago") as busy:
        RunLedger(engine, "r2", "alerts").open(None, [])
    assert str(busy.value).endswith(
        "this clears 60 s after its last heartbeat (delivery.lease_seconds)"
    )
    with DBSession(engine.db) as session:
        stale = utcnow() - lease - timedelta(seconds=1)
        session.execute(update(RunRow).where(col(RunRow.id) == "r1").values(heartbeat_at=stale))
        session.commit()
    successor = RunLedger(engine, "r2", "alerts")
    successor.open(None, [])
    successor.close("finished")
    gone = run_row(engine, "r1")
    assert gone is not None and gone.status == "running"  # resumable as it was


def test_every_worker_of_a_run_renews_its_heartbeat(engine: Engine) -> None:
    ledger = RunLedger(engine, "r1", "alerts")
    ledger.open(None, [])
    try:
        opened = run_row(engine, "r1")
        assert opened is not None and opened.heartbeat_at is not None
        with DBSession(engine.db) as session:
            old = utcnow() - timedelta(hours=1)
            session.execute(update(RunRow).where(col(RunRow.id) == "r1").values(heartbeat_at=old))
            session.commit()
        before = utcnow()
        ledger.keeper._renew(ledger.keeper.expiry())  # what its thread does each third of a lease
        renewed = run_row(engine, "r1")
        assert renewed is not None and renewed.heartbeat_at is not None
        assert as_utc(renewed.heartbeat_at) >= before
    finally:
        ledger.close("finished")


def test_a_tick_or_a_retry_while_another_run_sends_waits_for_a_later_pass(
    sqlite_project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=3)
    live = RunLedger(engine, "manual", "alerts")  # a send by hand, still going
    live.open(None, [])
    try:
        fired = datetime(2026, 11, 28, 9, 0, 7, tzinfo=UTC)
        with caplog.at_level(logging.WARNING, logger="engine.sending.scheduler"):
            assert run_scheduled(engine, "alerts", now=fired) is None
        assert "tick 2026-11-28 09:00:00+00:00 skipped: campaign 'alerts' is being sent" in (
            caplog.text
        )
        tick = run_id_for("alerts", fired.replace(second=0))
        assert run_row(engine, tick) is None
        with DBSession(engine.db) as session:  # an older run of the campaign, with a 451
            session.add(RunRow(id="old", campaign="alerts", status="finished"))
            for n, status in enumerate([LedgerStatus.DEFERRED] + [LedgerStatus.SENT] * 2):
                session.add(
                    LedgerRow(
                        run_id="old",
                        campaign="alerts",
                        recipient_id=f"u{n:03d}",
                        email=f"user{n}@example.com",
                        decision_id=f"d-old-{n}",
                        status=status,
                        variant="a",
                    )
                )
            session.commit()
        assert retry_deferred(engine) == []  # skipped for now, no error
    finally:
        live.close("finished")
    (retried,) = retry_deferred(engine)
    assert (retried.run_id, retried.retried, retried.sent) == ("old", 1, 1)
