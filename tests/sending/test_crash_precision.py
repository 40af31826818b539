"""A crash costs the messages in flight, not a batch: real `tailormail send` processes,
SIGKILLed at random moments during an SMTP run against aiosmtpd, then resumed.

Each kill's cost is read from the dead worker's hand-over journal (the messages it had
handed to the transport without an answer, among rows still handed over): that many rows
may become ``unknown``, at most one per open SMTP connection. Everything else is either
recorded with its outcome or sent again on resume, and the server never gets a message
twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from kit.project import Project
from kit.sending import CONNECTIONS, DEADLINE, smtp_project, start_send
from kit.smtp import serve
from sqlmodel import Session as DBSession
from sqlmodel import select

from engine.app import Engine
from engine.ledger.journal import parse
from engine.models import LedgerRow, LedgerStatus


class Inbox:
    """An aiosmtpd handler that keeps every recipient it accepted a message for.

    With ``gate`` set, each message waits (up to ``DEADLINE``) until that many distinct
    connections have delivered since, so senders provably overlap.
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self.gate = 0
        self.peers: set[Any] = set()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.peers.add(session.peer)
        waited = 0.0
        while len(self.peers) < self.gate and waited < DEADLINE:
            await asyncio.sleep(0.01)
            waited += 0.01
        with self._lock:
            self.received.extend(address.lower() for address in envelope.rcpt_tos)
        return "250 OK"

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with serve(handler) as port:
        yield handler, port


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"hang: {what}"
        time.sleep(0.0005)


def kill_after(
    handler: Inbox, process: subprocess.Popen[bytes], received: int, delay: float
) -> None:
    """SIGKILL ``process`` ``delay`` seconds after the server has ``received`` messages."""
    wait_for(lambda: handler.count() >= received or process.poll() is not None, "sending")
    assert process.poll() is None, "the run ended before the kill"
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait(DEADLINE) == -signal.SIGKILL


def ledger(engine: Engine) -> list[LedgerRow]:
    with DBSession(engine.db) as session:
        return list(session.exec(select(LedgerRow)).all())


def in_flight_at_death(engine: Engine, project: Project) -> int:
    """What the dead workers' journals say was with the transport (rows still handed over)."""
    held = {r.id for r in ledger(engine) if r.status == LedgerStatus.HANDED_OVER}
    count = 0
    for path in (project.root / "journal").glob("*.journal"):
        state = parse(path.read_bytes())
        count += len((state.handed - set(state.outcomes)) & held)
    return count


def check_exactly_once(inbox: Inbox, rows: list[LedgerRow], people: int) -> Counter[str]:
    """No duplicate; every recipient sent (and received) or unknown; returns the statuses."""
    received = Counter(inbox.received)
    assert [a for a, n in received.items() if n > 1] == [], "a message was delivered twice"
    assert len(rows) == people
    statuses = Counter(r.status for r in rows)
    assert set(statuses) <= {LedgerStatus.SENT, LedgerStatus.UNKNOWN}, statuses
    for row in rows:
        if row.status == LedgerStatus.SENT:
            assert received[row.email] == 1, f"{row.email} is sent in the ledger, never received"
        else:
            assert received[row.email] <= 1
    assert set(received) <= {r.email for r in rows}
    return statuses


def test_sigkill_at_random_moments_costs_at_most_the_messages_in_flight(
    sqlite_project: Project, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    people = 2000
    engine = smtp_project(sqlite_project, port, people)
    seed = int(os.environ.get("TAILORMAIL_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    run: tuple[str, ...] = ("--new-run", "crashy")
    per_kill: list[int] = []
    while len(per_kill) < 10:
        process = start_send(sqlite_project, *run)
        run = ("--run", "crashy")
        # Once it has sent a random number more, at a random instant: rendering, writing
        # to the database, or anywhere in an SMTP transaction. A message takes a
        # millisecond or two, so 50 ms spreads the instant over many of them while ten
        # kills (at most 120 + 50 ms of sending each) stay well short of the audience.
        kill_after(handler, process, handler.count() + rng.randint(1, 120), rng.uniform(0, 0.05))
        per_kill.append(in_flight_at_death(engine, sqlite_project))

    final = start_send(sqlite_project, *run)
    _, errors = final.communicate(timeout=DEADLINE)
    assert final.returncode == 0, errors.decode()

    statuses = check_exactly_once(handler, ledger(engine), people)
    print(f"\nseed {seed}: unknown per kill {per_kill}; final {dict(statuses)}")
    assert all(n <= CONNECTIONS for n in per_kill), (seed, per_kill)
    assert statuses[LedgerStatus.UNKNOWN] == sum(per_kill), (seed, per_kill, statuses)


def test_two_workers_resuming_a_crashed_run_at_once_send_each_email_once(
    project: Project, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    people = 600
    # One connection each, so two connections at the server means two workers.
    engine = smtp_project(project, port, people, pool=1)
    kill_after(handler, start_send(project, "--new-run", "shared"), 40, 0.001)
    in_flight = in_flight_at_death(engine, project)

    # The first resumer blocks inside its first SMTP transaction, rows handed over, until
    # the second has opened the run, settled the dead worker's rows and connected too.
    handler.gate, handler.peers = 2, set()
    first = start_send(project, "--run", "shared")
    wait_for(lambda: len(handler.peers) >= 1, "the first resumer connecting")
    second = start_send(project, "--run", "shared")
    for worker in (first, second):
        _, errors = worker.communicate(timeout=DEADLINE)
        assert worker.returncode == 0, errors.decode()
    assert len(handler.peers) >= 2  # they did overlap

    statuses = check_exactly_once(handler, ledger(engine), people)
    # Only what the crash had in flight is unknown: neither live worker marked the other's.
    assert statuses[LedgerStatus.UNKNOWN] == in_flight <= 1
    assert not list((Path(project.root) / "journal").glob("*.journal"))
