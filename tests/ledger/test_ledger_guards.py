"""A ledger row's final state is final: one worker's failure never overwrites a row that
another worker has already finalized as sent.

The other worker is played by ``finalize_elsewhere``, which marks rows sent the way a
worker that delivered them would, at the moment this worker is still holding them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from kit.project import Project
from sqlalchemy import update
from sqlmodel import Session, col, select

from engine import DeliveryBackend, Message, SendResult, hookimpl
from engine.app import Engine
from engine.models import LedgerRow, LedgerStatus, utcnow
from engine.sending.real_run import run_campaign


def finalize_elsewhere(engine: Engine, send_ids: Sequence[int]) -> None:
    """Another worker delivered these rows and recorded them as sent."""
    with engine.db.begin() as conn:
        conn.execute(
            update(LedgerRow)
            .where(col(LedgerRow.id).in_(list(send_ids)))
            .values(status=LedgerStatus.SENT, sent_at=utcnow(), provider_id="other-worker")
        )


def ledger(engine: Engine) -> list[LedgerRow]:
    with Session(engine.db) as session:
        return list(session.exec(select(LedgerRow).order_by(LedgerRow.id)).all())


class OvertakenBackend(DeliveryBackend):
    """Its connection drops, but only after another worker finalized the first two rows."""

    name = "overtaken"
    finalized: list[int] = []

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        OvertakenBackend.finalized = [m.send_id for m in messages[:2]]
        finalize_elsewhere(self.engine, OvertakenBackend.finalized)
        raise ConnectionResetError("connection lost")


class Overtaken:
    @staticmethod
    @hookimpl
    def register_backends(register):  # type: ignore[no-untyped-def]
        register("overtaken", OvertakenBackend)


class OvertakenWhileRendering:
    """Rendering fails after another worker finalized the first two rows of the batch."""

    def __init__(self) -> None:
        self.finalized: list[int] = []

    @hookimpl
    def prepare_message(self, engine, campaign, message):  # type: ignore[no-untyped-def]
        if not self.finalized:
            self.finalized = [r.id for r in ledger(engine)[:2] if r.id is not None]
            finalize_elsewhere(engine, self.finalized)
        raise RuntimeError("template exploded")


def test_a_transport_failure_leaves_rows_another_worker_sent(project: Project) -> None:
    engine = project.engine(backend="overtaken", plugins=[Overtaken()])
    project.seed(engine, people=4)
    with pytest.raises(ConnectionResetError):
        run_campaign(engine, "alerts", run_id="r1")
    theirs = [r for r in ledger(engine) if r.id in OvertakenBackend.finalized]
    mine = [r for r in ledger(engine) if r.id not in OvertakenBackend.finalized]
    assert len(theirs) == 2 and len(mine) == 2
    assert [(r.status, r.provider_id, r.error) for r in theirs] == [
        (LedgerStatus.SENT, "other-worker", None)
    ] * 2
    # This worker's own rows may or may not have left: unknown, never resent blindly.
    assert {r.status for r in mine} == {LedgerStatus.UNKNOWN}


def test_a_rendering_failure_leaves_rows_another_worker_sent(sqlite_project: Project) -> None:
    plugin = OvertakenWhileRendering()
    engine = sqlite_project.engine(plugins=[plugin])
    sqlite_project.seed(engine, people=4)
    with pytest.raises(RuntimeError, match="template exploded"):
        run_campaign(engine, "alerts", run_id="r1")
    theirs = [r for r in ledger(engine) if r.id in plugin.finalized]
    mine = [r for r in ledger(engine) if r.id not in plugin.finalized]
    assert [(r.status, r.error) for r in theirs] == [(LedgerStatus.SENT, None)] * 2
    # Nothing of this worker's batch left: its own rows failed.
    assert len(mine) == 2 and {r.status for r in mine} == {LedgerStatus.FAILED}
    assert engine.memory_outbox == []  # type: ignore[attr-defined]


class InterruptedSending(DeliveryBackend):
    """Ctrl-C lands while a batch is with the transport."""

    name = "interrupted"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        raise KeyboardInterrupt


class Interrupted:
    @staticmethod
    @hookimpl
    def register_backends(register):  # type: ignore[no-untyped-def]
        register("interrupted", InterruptedSending)


def test_a_run_is_marked_stopped_even_when_settling_its_rows_fails(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.ledger import transitions
    from engine.models import RunRow

    def broken_settle(*args: object) -> None:
        raise OSError("journal cut short")

    monkeypatch.setattr(transitions, "settle", broken_settle)
    engine = sqlite_project.engine(backend="interrupted", plugins=[Interrupted()])
    sqlite_project.seed(engine, people=4)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(engine, "alerts", run_id="r1")
    with Session(engine.db) as session:
        run = session.get(RunRow, "r1")
    assert run is not None and run.status == "interrupted"
    assert run.error and run.error.startswith("stopped by Ctrl-C; continue with")
