"""A worker that dies costs only the messages it had with the transport.

A resumed run settles each row a dead worker held: from its hand-over journal when the
worker ran on this host (dead as soon as its journal is unlocked), from its lease
otherwise (dead once the lease expired). A live worker's rows are never touched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from kit.ledger import claim_by_hand, message_for
from kit.project import ROOT, Project
from sqlalchemy import update
from sqlmodel import Session, col, select

from engine.app import Engine
from engine.ledger import RunLedger
from engine.models import LedgerRow, LedgerStatus, utcnow
from engine.sending.real_run import run_campaign
from engine.types import Message, SendResult, SendStatus

KILLED_WORKER = """
import json, os, signal, sys
from pathlib import Path
from engine.app import Engine
from engine.ledger import RunLedger
from engine.settings import load_settings
from engine.types import SendResult, SendStatus
from kit.ledger import claim_by_hand, message_for

root, url = sys.argv[1], sys.argv[2]
settings = load_settings(
    project_dir=Path(root),
    environ={"TAILORMAIL_SECRET": "test-secret-0123456789-0123456789-01"},
    overrides={"database_url": url, "delivery": {"backend": "memory"}},
)
engine = Engine(settings=settings, load_entry_points=False)
ledger = RunLedger(engine, "killed", "alerts")
ledger.open(None, [])
rows = claim_by_hand(engine, ledger, 5)
messages = [message_for(row) for row in rows]
ledger.hand_over(messages[:4])
journal = ledger.journal
journal.handing_over(messages[0])
journal.outcome(SendResult(messages[0].send_id, SendStatus.SENT, provider_id="p0"))
journal.handing_over(messages[1])
journal.outcome(SendResult(messages[1].send_id, SendStatus.PERMANENT_FAILURE, error="550 no"))
journal.handing_over(messages[2])  # with the transport when the worker dies
print(json.dumps([m.to_address for m in messages]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def ledger_rows(engine: Engine) -> dict[str, LedgerRow]:
    with Session(engine.db) as session:
        return {r.email: r for r in session.exec(select(LedgerRow)).all()}


def delivered_to(engine: Engine) -> list[str]:
    return [m.to_address for m in getattr(engine, "memory_outbox", [])]


def test_a_killed_workers_rows_settle_from_its_journal(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=8)
    script = textwrap.dedent(KILLED_WORKER)
    worker = subprocess.run(
        [sys.executable, "-c", script, str(project.root), project.db_url],
        cwd=ROOT / "tests" / "ledger",
        env={
            "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    sent, failed, in_flight, never_handed, pending = json.loads(worker.stdout)
    assert ledger_rows(engine)[in_flight].status == LedgerStatus.HANDED_OVER

    summary = run_campaign(engine, "alerts", run_id="killed")

    rows = ledger_rows(engine)
    assert (rows[sent].status, rows[sent].provider_id) == (LedgerStatus.SENT, "p0")
    assert (rows[failed].status, rows[failed].error) == (LedgerStatus.FAILED, "550 no")
    assert (rows[in_flight].status, rows[in_flight].error) == (
        LedgerStatus.UNKNOWN,
        "interrupted while with the transport",
    )
    # Never reached the transport: sent now, with the decision logged before the crash.
    assert {rows[never_handed].status, rows[pending].status} == {LedgerStatus.SENT}
    assert rows[never_handed].variant == rows[pending].variant == "a"
    assert summary.retried == 2 and summary.sent == 2 + 3
    assert summary.already_done == len(rows) - 5  # each row in one count, the retried too
    assert sorted(delivered_to(engine)) == sorted(set(rows) - {sent, failed, in_flight})
    assert not list((project.root / "journal").glob("*.journal"))  # adopted, gone


def _hand_to_another_host(engine: Engine, expires_in: timedelta) -> None:
    """The run's held rows belong to a worker on another host, leased until now + ..."""
    with Session(engine.db) as session:
        session.execute(
            update(LedgerRow)
            .where(col(LedgerRow.status).in_([LedgerStatus.PENDING, LedgerStatus.HANDED_OVER]))
            .values(owner="elsewhere.example/77-cafe", lease_expires=utcnow() + expires_in)
        )
        session.commit()


def test_another_hosts_rows_are_taken_over_only_when_its_lease_expires(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=6)
    ledger = RunLedger(engine, "remote", "alerts")
    ledger.open(None, [])
    rows = claim_by_hand(engine, ledger, 3)
    ledger.hand_over([message_for(rows[0])])
    ledger.keeper.stop()
    _hand_to_another_host(engine, timedelta(minutes=5))

    alive = run_campaign(engine, "alerts", run_id="remote")
    assert (alive.already_done, alive.retried, alive.sent) == (3, 0, 3)
    held = [r for r in ledger_rows(engine).values() if r.owner == "elsewhere.example/77-cafe"]
    assert sorted(r.status for r in held) == ["handed_over", "pending", "pending"]

    _hand_to_another_host(engine, timedelta(seconds=-1))  # its lease ran out: it is dead
    dead = run_campaign(engine, "alerts", run_id="remote")
    assert (dead.retried, dead.sent) == (2, 2)
    after = ledger_rows(engine)
    # Its journal is on the other host: the handed-over row may have left, never resent.
    assert (after[rows[0].email].status, after[rows[0].email].error) == (
        LedgerStatus.UNKNOWN,
        "interrupted after the hand-over (its worker's journal is not on this host)",
    )
    assert sorted(delivered_to(engine)) == sorted(e for e in after if e != rows[0].email)


def test_rows_pending_before_leases_existed_are_unknown(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=4)
    ledger = RunLedger(engine, "old", "alerts")
    ledger.open(None, [])
    claim_by_hand(engine, ledger, 2)
    ledger.keeper.stop()
    with Session(engine.db) as session:  # what an older release left: no owner, no lease
        session.execute(update(LedgerRow).values(owner=None, lease_expires=None))
        session.commit()
    summary = run_campaign(engine, "alerts", run_id="old")
    assert (summary.already_done, summary.sent) == (2, 2)
    assert sorted(r.status for r in ledger_rows(engine).values()) == ["sent"] * 2 + ["unknown"] * 2


def test_the_outbox_reconciles_unknown_sends_from_its_folder(sqlite_project: Project) -> None:
    engine = sqlite_project.engine(backend="outbox")
    sqlite_project.seed(engine, people=5)
    run_campaign(engine, "alerts", run_id="box")
    folder: Path = sqlite_project.root / "outbox"
    files = sorted(folder.glob("*.eml"))
    assert len(files) == 5
    files[0].unlink()  # the worker died before this one was written
    with Session(engine.db) as session:
        session.execute(update(LedgerRow).values(status=LedgerStatus.UNKNOWN))
        session.commit()
    again = run_campaign(engine, "alerts", run_id="box")
    assert (again.retried, again.sent) == (1, 1)
    assert {r.status for r in ledger_rows(engine).values()} == {LedgerStatus.SENT}
    assert len(list(folder.glob("*.eml"))) == 5 and not list(folder.glob(".*"))


def test_a_backend_that_raises_mid_batch_costs_only_the_message_in_flight(
    sqlite_project: Project,
) -> None:
    from engine import DeliveryBackend, hookimpl

    class Dropping(DeliveryBackend):
        name = "dropping"
        reports_handover = True

        def __init__(self, engine: Engine) -> None:
            self.sent = 0

        def send(self, messages):  # type: ignore[no-untyped-def]
            return self.send_each(messages, self._one)

        def _one(self, message: Message) -> SendResult:
            self.sent += 1
            if self.sent == 3:
                raise ConnectionResetError("lost after DATA")
            return SendResult(message.send_id, SendStatus.SENT, provider_id="x")

    class Plugin:
        @hookimpl
        def register_backends(self, register):  # type: ignore[no-untyped-def]
            register("dropping", Dropping)

    engine = sqlite_project.engine(backend="dropping", plugins=[Plugin()])
    sqlite_project.seed(engine, people=6)
    with pytest.raises(ConnectionResetError):
        run_campaign(engine, "alerts", run_id="drop")
    statuses = sorted(r.status for r in ledger_rows(engine).values())
    assert statuses == ["deferred"] * 3 + ["sent"] * 2 + ["unknown"]
    unknown = [r for r in ledger_rows(engine).values() if r.status == LedgerStatus.UNKNOWN]
    assert unknown[0].error == "ConnectionResetError: lost after DATA"
