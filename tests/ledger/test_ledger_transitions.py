"""Every ledger transition, in process on SQLite and PostgreSQL (whose batch statements
differ: ``engine.ledger.statements``), with the exact rows it leaves.

The end-to-end ledger tests (``test_ledger_recovery.py``, ``test_crash_precision.py``)
kill workers in subprocesses, which mutation testing cannot map to the code they run;
these tests drive ``RunLedger`` and ``reconcile.settle_unknown`` directly, one transition
at a time, so each mutant of ``engine/ledger`` meets a test that names the row it breaks.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kit.project import Project
from sqlalchemy import text, update
from sqlmodel import Session, col, select

from engine.app import Engine
from engine.feedback.events import record_event
from engine.ledger import Journal, RunLedger, transitions
from engine.ledger import journal as journal_module
from engine.ledger.journal import JournalState, boot_id, parse
from engine.ledger.lease import LeaseKeeper, Worker, expired
from engine.ledger.reconcile import HARD_BOUNCE_ERROR, settle_unknown
from engine.ledger.recovery import IN_FLIGHT, LEGACY, NEVER_LEFT, Fate, fate
from engine.ledger.transitions import ClaimedRow
from engine.models import (
    EventRow,
    LedgerRow,
    LedgerStatus,
    RunRow,
    VariantRow,
    as_utc,
    utcnow,
)
from engine.types import (
    DeliveryBackend,
    EventType,
    Message,
    SendResult,
    SendStatus,
    TrackingEvent,
)
from plugins.delivery.outbox import eml_name

OTHER = "elsewhere.example/1-beef"


@pytest.fixture
def engine(project: Project) -> Engine:
    return project.engine()


@pytest.fixture
def ledger(engine: Engine) -> Iterator[RunLedger]:
    ledger = RunLedger(engine, "r1", "alerts")
    ledger.open(None, [])
    yield ledger
    ledger.keeper.stop()


def row(run_id: str, n: int, status: str = LedgerStatus.PENDING) -> dict[str, Any]:
    """A ledger row as the pipeline claims it (variant ``a``), for recipient ``u<n>``."""
    return {
        "run_id": run_id,
        "campaign": "alerts",
        "recipient_id": f"u{n}",
        "email": f"u{n}@example.com",
        "decision_id": f"{run_id}-u{n}",
        "status": status,
        "variant": "a" if status == LedgerStatus.PENDING else None,
        "skip_reason": None if status == LedgerStatus.PENDING else "suppressed (bounce)",
    }


def message(send_id: int, n: int = 0) -> Message:
    return Message(
        send_id,
        f"<{send_id}@test>",
        "a@example.com",
        f"u{n}@example.com",
        "s",
        "<p>h</p>",
        "t",
        metadata={"links": [f"https://x.example/{send_id}"], "link_items": [["i1", 0]]},
    )


def rows(engine: Engine) -> dict[str, LedgerRow]:
    """The ledger by recipient id."""
    with Session(engine.db) as session:
        return {r.recipient_id: r for r in session.exec(select(LedgerRow)).all()}


def run_row(engine: Engine, run_id: str = "r1") -> RunRow:
    with Session(engine.db) as session:
        found = session.get(RunRow, run_id)
        assert found is not None
        return found


def set_rows(engine: Engine, ids: list[int], **values: Any) -> None:
    with Session(engine.db) as session:
        session.execute(update(LedgerRow).where(col(LedgerRow.id).in_(ids)).values(**values))
        session.commit()


def claimed(ledger: RunLedger, n: int) -> list[ClaimedRow]:
    owned, _ = ledger.claim([row(ledger.run_id, i) for i in range(n)])
    return sorted(owned, key=lambda r: r.recipient_id)


# -- open, close, the run row ----------------------------------------------------------------


def test_open_marks_a_failed_run_running_again_and_syncs_its_variants(engine: Engine) -> None:
    first = RunLedger(engine, "r1", "alerts")
    when = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    variant = {"campaign": "alerts", "key": "a", "template": "t/a.html", "features": {}}
    first.open(when, [variant | {"subject": "s1"}])
    first.close("failed", "boom")
    assert (run_row(engine).status, run_row(engine).error) == ("failed", "boom")
    assert run_row(engine).finished_at is not None

    again = RunLedger(engine, "r1", "alerts")
    again.open(when, [variant | {"subject": "s2"}])
    run = run_row(engine)
    assert (run.campaign, run.status, run.error, run.finished_at) == (
        "alerts",
        "running",
        None,
        None,
    )
    assert as_utc(run.scheduled_for) == when
    with Session(engine.db) as session:
        variants = [(v.key, v.subject) for v in session.exec(select(VariantRow)).all()]
    assert variants == [("a", "s2")]
    again.close("done")


def test_open_without_a_schedule_leaves_it_empty(engine: Engine) -> None:
    ledger = RunLedger(engine, "adhoc", "alerts")
    ledger.open(None, [])
    assert run_row(engine, "adhoc").scheduled_for is None
    ledger.close("done")


def test_close_marks_the_run_and_cuts_a_long_error(engine: Engine) -> None:
    ledger = RunLedger(engine, "r1", "alerts")
    ledger.open(None, [])
    ledger.close("failed", "x" * 2001 + "tail")
    run = run_row(engine)
    assert (run.status, run.error) == ("failed", "x" * 2000)
    assert run.finished_at is not None and run.started_at <= run.finished_at


def test_close_without_an_error_stores_none(engine: Engine) -> None:
    ledger = RunLedger(engine, "r1", "alerts")
    ledger.open(None, [])
    ledger.close("done")
    assert (run_row(engine).status, run_row(engine).error) == ("done", None)


def test_close_settles_the_rows_it_holds_and_only_its_run(
    engine: Engine, ledger: RunLedger
) -> None:
    other_run = RunLedger(engine, "r2", "digest")
    other_run.open(None, [])
    mine = claimed(ledger, 2)
    theirs, _ = other_run.claim([row("r2", 5)])
    ledger.close("done")
    after = rows(engine)
    assert [(after[r.recipient_id].status, after[r.recipient_id].error) for r in mine] == [
        (LedgerStatus.DEFERRED, NEVER_LEFT)
    ] * 2
    assert after["u0"].lease_expires is None
    assert after["u5"].status == LedgerStatus.PENDING and theirs[0].owner == other_run.owner
    other_run.close("done")


def test_close_settles_handed_over_rows_from_the_journal(engine: Engine, ledger: RunLedger) -> None:
    held = claimed(ledger, 3)
    messages = ledger.hand_over([message(r.id or 0, n) for n, r in enumerate(held)])
    ledger.journal.handing_over(messages[0])
    ledger.journal.outcome(SendResult(messages[0].send_id, SendStatus.SENT, provider_id="p0"))
    ledger.journal.handing_over(messages[1])  # with the transport when the worker stops
    ledger.close("failed", "stopped")
    after = rows(engine)
    assert [(after[f"u{n}"].status, after[f"u{n}"].error) for n in range(3)] == [
        (LedgerStatus.SENT, None),
        (LedgerStatus.UNKNOWN, IN_FLIGHT),
        (LedgerStatus.DEFERRED, NEVER_LEFT),  # the journal is complete: it never left
    ]
    assert after["u0"].provider_id == "p0" and after["u0"].sent_at is not None
    assert not ledger.journal.path.exists()


def test_a_failed_settle_keeps_the_journal_for_whoever_recovers(
    ledger: RunLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> int:
        raise ConnectionError("database gone")

    monkeypatch.setattr(transitions, "settle", refuse)
    with pytest.raises(ConnectionError):
        ledger.leave()
    assert ledger.journal.path.exists()


def test_pin_model_keeps_the_first_version(ledger: RunLedger) -> None:
    assert ledger.model_version() is None
    assert ledger.pin_model("v1") == "v1"
    assert ledger.pin_model("v2") == "v1"
    assert ledger.model_version() == "v1"


def test_pin_model_without_a_run_row_answers_empty(engine: Engine) -> None:
    assert RunLedger(engine, "never-opened", "alerts").pin_model("v1") == ""


def test_pin_model_touches_only_its_run(engine: Engine, ledger: RunLedger) -> None:
    other = RunLedger(engine, "r2", "digest")
    other.open(None, [])
    other.pin_model("theirs")
    assert ledger.pin_model("mine") == "mine"
    assert other.model_version() == "theirs"
    other.close("done")


def test_record_shards_and_progress(engine: Engine, ledger: RunLedger) -> None:
    other = RunLedger(engine, "r2", "digest")
    other.open(None, [])
    other.claim([row("r2", 9)])
    assert ledger.rows_written() == 0
    ledger.record_shards(3)
    assert run_row(engine).shards == 3 and run_row(engine, "r2").shards is None
    claimed(ledger, 3)
    assert ledger.rows_written() == 3
    assert ledger.recipients_done(["u0", "u2", "u7", "u9"]) == {"u0", "u2"}
    assert ledger.recipients_done(["u1"]) == {"u1"}  # a page of one is its own range
    assert ledger.recipients_done(["u1", "u2"]) == {"u1", "u2"}  # both ends included
    assert ledger.recipients_done(["u10", "u15"]) == set() and ledger.recipients_done([]) == set()
    other.close("done")


# -- claim ------------------------------------------------------------------------------------


def test_claim_inserts_pending_rows_under_the_lease_and_skipped_ones_without(
    engine: Engine, ledger: RunLedger
) -> None:
    before = utcnow()
    owned, skipped = ledger.claim([row("r1", 0), row("r1", 1, LedgerStatus.SKIPPED), row("r1", 2)])
    assert skipped == 1
    assert sorted((r.recipient_id, r.status, r.owner) for r in owned) == [
        ("u0", LedgerStatus.PENDING, ledger.owner),
        ("u2", LedgerStatus.PENDING, ledger.owner),
    ]
    stored = rows(engine)
    assert {r.recipient_id: r.id for r in owned} == {"u0": stored["u0"].id, "u2": stored["u2"].id}
    assert stored["u1"].status == LedgerStatus.SKIPPED and stored["u1"].lease_expires is None
    lease = timedelta(seconds=engine.settings.delivery.lease_seconds)
    expires = as_utc(stored["u0"].lease_expires)
    assert expires is not None and before + lease <= expires <= utcnow() + lease
    assert all(r.lease_expires is not None and r.variant == "a" for r in owned)


def test_claiming_many_rows_refreshes_the_ledgers_statistics(
    engine: Engine, ledger: RunLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL's planner must see the rows a run adds, or each page's lookups read
    # every row of the run (engine.ledger.statements.refresh_statistics)
    def analyzed() -> bool:
        with engine.db.connect() as conn:
            query = "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'ledger'"
            return conn.scalar(text(query)) is not None

    monkeypatch.setattr(transitions, "ANALYZE_EVERY", 5)
    claimed(ledger, 4)
    if engine.db.dialect.name == "postgresql":
        assert not analyzed()
    ledger.claim([row(ledger.run_id, i) for i in range(4, 6)])  # 6 rows since the last
    assert ledger._unanalyzed == 0 and ledger.rows_written() == 6
    if engine.db.dialect.name == "postgresql":
        assert analyzed()


def test_claim_returns_none_of_the_rows_another_worker_inserted_first(
    engine: Engine, ledger: RunLedger
) -> None:
    other = RunLedger(engine, "r1", "alerts")
    other.open(None, [])
    first, _ = other.claim([row("r1", 0), row("r1", 1, LedgerStatus.SKIPPED)])
    owned, skipped = ledger.claim([row("r1", 0), row("r1", 1, LedgerStatus.SKIPPED), row("r1", 2)])
    assert [r.recipient_id for r in first] == ["u0"]
    assert ([r.recipient_id for r in owned], skipped) == (["u2"], 0)
    assert rows(engine)["u0"].owner == other.owner
    other.keeper.stop()


# -- hand_over --------------------------------------------------------------------------------


def test_hand_over_moves_held_pending_rows_with_links_and_message_id(
    engine: Engine, ledger: RunLedger
) -> None:
    held = claimed(ledger, 4)
    ids = [r.id for r in held]
    assert all(isinstance(i, int) for i in ids)
    set_rows(engine, [ids[1]], owner=OTHER)  # taken over by another worker
    set_rows(engine, [ids[2]], status=LedgerStatus.SENT)  # finalized elsewhere
    messages = [message(r.id or 0, i) for i, r in enumerate(held)]
    moved = ledger.hand_over(messages)
    assert [m.send_id for m in moved] == [ids[0], ids[3]]
    after = rows(engine)
    assert [after[f"u{i}"].status for i in range(4)] == [
        LedgerStatus.HANDED_OVER,
        LedgerStatus.PENDING,
        LedgerStatus.SENT,
        LedgerStatus.HANDED_OVER,
    ]
    assert (after["u0"].links, after["u0"].link_items, after["u0"].message_id) == (
        [f"https://x.example/{ids[0]}"],
        [["i1", 0]],
        f"<{ids[0]}@test>",
    )
    assert (after["u1"].links, after["u1"].message_id) == (None, None)
    assert (after["u2"].links, after["u2"].message_id) == (None, None)
    assert after["u3"].message_id == f"<{ids[3]}@test>"
    assert after["u0"].lease_expires is not None


def test_hand_over_renews_the_lease_of_the_rows_it_moves(engine: Engine, ledger: RunLedger) -> None:
    (held,) = claimed(ledger, 1)
    stale = datetime(2020, 1, 1, tzinfo=UTC)
    set_rows(engine, [held.id or 0], lease_expires=stale)
    before = utcnow()
    ledger.hand_over([message(held.id or 0)])
    expiry = as_utc(rows(engine)["u0"].lease_expires)
    assert expiry is not None and expiry > before


def test_hand_over_stores_no_link_items_when_there_are_none(
    engine: Engine, ledger: RunLedger
) -> None:
    (held,) = claimed(ledger, 1)
    bare = Message(held.id or 0, "<m@test>", "a@example.com", "u0@example.com", "s", "h", "t")
    assert ledger.hand_over([bare]) == [bare]
    after = rows(engine)["u0"]
    assert (after.links, after.link_items, after.message_id) == (None, None, "<m@test>")


def test_hand_over_of_nothing_is_nothing(ledger: RunLedger) -> None:
    assert ledger.hand_over([]) == []


# -- record -----------------------------------------------------------------------------------


def test_record_writes_each_outcome_on_the_rows_it_handed_over(
    engine: Engine, ledger: RunLedger
) -> None:
    held = claimed(ledger, 5)
    ids = [r.id or 0 for r in held]
    ledger.hand_over([message(i, n) for n, i in enumerate(ids[:4])])
    set_rows(engine, [ids[3]], owner=OTHER)
    results = [
        SendResult(ids[0], SendStatus.SENT, provider_id="p0"),
        SendResult(ids[1], SendStatus.TEMPORARY_FAILURE, error="421 later"),
        SendResult(ids[2], SendStatus.PERMANENT_FAILURE, error="550 no"),
        SendResult(ids[3], SendStatus.SENT, provider_id="p3"),  # not this worker's now
        SendResult(ids[4], SendStatus.SENT, provider_id="p4"),  # never handed over
    ]
    before = utcnow()
    assert ledger.record(results) == ["sent", "deferred", "failed", "sent", "sent"]
    after = rows(engine)
    assert [
        (after[f"u{n}"].status, after[f"u{n}"].provider_id, after[f"u{n}"].error) for n in range(5)
    ] == [
        (LedgerStatus.SENT, "p0", None),
        (LedgerStatus.DEFERRED, None, "421 later"),
        (LedgerStatus.FAILED, None, "550 no"),
        (LedgerStatus.HANDED_OVER, None, None),
        (LedgerStatus.PENDING, None, None),
    ]
    sent_at = as_utc(after["u0"].sent_at)
    assert sent_at is not None and before <= sent_at <= utcnow()
    assert after["u1"].sent_at is None and after["u2"].sent_at is None
    assert [after[f"u{n}"].lease_expires for n in range(3)] == [None] * 3
    assert after["u3"].lease_expires is not None and after["u4"].lease_expires is not None


def test_a_provider_id_that_is_our_message_id_is_not_stored_twice_and_still_finds_the_send(
    engine: Engine, ledger: RunLedger
) -> None:
    """SMTP and backends without ids of their own answer with our Message-ID: the row keeps
    it once (its own column and index), and a provider event naming it finds the send."""
    held = claimed(ledger, 2)
    ids = [r.id or 0 for r in held]
    ledger.hand_over([message(i, n) for n, i in enumerate(ids)])
    ledger.record(
        [
            SendResult(ids[0], SendStatus.SENT, provider_id=f"<{ids[0]}@test>"),
            SendResult(ids[1], SendStatus.SENT, provider_id="provider-1"),
        ]
    )
    after = rows(engine)
    assert (after["u0"].provider_id, after["u0"].message_id) == (None, f"<{ids[0]}@test>")
    assert after["u1"].provider_id == "provider-1"
    for n, named in enumerate((f"{ids[0]}@test", "provider-1")):  # as providers spell them
        bounce = TrackingEvent(
            EventType.BOUNCE,
            None,
            utcnow(),
            provider_message_id=named,
            data={"bounce_type": "hard"},
        )
        record_event(engine, bounce, dedupe_key=f"b{n}")
    with Session(engine.db) as session:
        found = session.exec(select(EventRow.send_id).order_by(col(EventRow.id))).all()
    assert list(found) == ids


def test_a_provider_event_naming_our_message_id_finds_the_send_by_its_reference(
    engine: Engine, ledger: RunLedger
) -> None:
    """The Message-ID tailormail made (``<send_ref@domain>``) is not in the Message-ID
    index: an event naming it finds the send by its reference; one a plugin set, by the
    index."""
    held = claimed(ledger, 2)
    ids = [r.id or 0 for r in held]
    ours = engine.send_refs.ref(ids[0])
    messages = [
        Message(ids[0], f"<{ours}@mail.example>", "a@x.example", "u0@example.com", "s", "h", "t"),
        Message(ids[1], "<plugin-made@x.example>", "a@x.example", "u1@example.com", "s", "h", "t"),
    ]
    messages[0].send_ref, messages[1].send_ref = ours, engine.send_refs.ref(ids[1])
    ledger.hand_over(messages)
    ledger.record([SendResult(i, SendStatus.UNKNOWN, error="timeout") for i in ids])
    for n, named in enumerate((f"{ours}@mail.example", "<plugin-made@x.example>")):
        bounce = TrackingEvent(
            EventType.DELIVERED, None, utcnow(), provider_message_id=named, data={}
        )
        record_event(engine, bounce, dedupe_key=f"d{n}")
    with Session(engine.db) as session:
        found = session.exec(select(EventRow.send_id).order_by(col(EventRow.id))).all()
    assert list(found) == ids
    assert [rows(engine)[f"u{n}"].status for n in range(2)] == [LedgerStatus.SENT] * 2


def test_record_an_unknown_outcome_and_a_long_error(engine: Engine, ledger: RunLedger) -> None:
    (held,) = claimed(ledger, 1)
    ledger.hand_over([message(held.id or 0)])
    ledger.record([SendResult(held.id or 0, SendStatus.UNKNOWN, error="e" * 2001 + "tail")])
    after = rows(engine)["u0"]
    assert (after.status, after.error, after.sent_at) == (LedgerStatus.UNKNOWN, "e" * 2000, None)


def test_record_of_nothing_is_nothing(ledger: RunLedger) -> None:
    assert ledger.record([]) == []


# -- fail -------------------------------------------------------------------------------------


def test_fail_marks_only_held_pending_rows_failed(engine: Engine, ledger: RunLedger) -> None:
    held = claimed(ledger, 5)
    ids = [r.id or 0 for r in held]
    ledger.hand_over([message(ids[1], 1)])
    set_rows(engine, [ids[2]], owner=OTHER)
    ledger.fail(ids[:4], "f" * 2001 + "tail")
    after = rows(engine)
    assert [after[f"u{n}"].status for n in range(5)] == [
        LedgerStatus.FAILED,
        LedgerStatus.HANDED_OVER,
        LedgerStatus.PENDING,
        LedgerStatus.FAILED,
        LedgerStatus.PENDING,  # held, pending, not named
    ]
    assert (after["u0"].error, after["u0"].lease_expires) == ("f" * 2000, None)
    assert (after["u1"].error, after["u2"].error) == (None, None)


# -- reclaim_deferred -------------------------------------------------------------------------


def test_reclaim_deferred_takes_this_runs_deferred_rows_back(
    engine: Engine, ledger: RunLedger
) -> None:
    other_run = RunLedger(engine, "r2", "digest")
    other_run.open(None, [])
    theirs, _ = other_run.claim([row("r2", 9)])
    held = claimed(ledger, 3)
    ids = [r.id or 0 for r in held]
    set_rows(
        engine,
        [ids[0], ids[1], theirs[0].id or 0],
        status="deferred",
        error="421",
        owner=OTHER,
        lease_expires=None,
    )
    before = utcnow()
    back = ledger.reclaim_deferred()
    assert sorted((r.recipient_id, r.status, r.error, r.owner) for r in back) == [
        ("u0", LedgerStatus.PENDING, None, ledger.owner),
        ("u1", LedgerStatus.PENDING, None, ledger.owner),
    ]
    assert all(r.variant == "a" for r in back)
    expiries = [as_utc(r.lease_expires) for r in back]
    assert all(e is not None and e > before for e in expiries)
    after = rows(engine)
    assert (after["u9"].status, after["u9"].error) == (LedgerStatus.DEFERRED, "421")
    assert after["u2"].status == LedgerStatus.PENDING
    other_run.keeper.stop()


def test_reclaim_with_nothing_deferred_is_nothing(ledger: RunLedger) -> None:
    claimed(ledger, 1)
    assert ledger.reclaim_deferred() == []


# -- transmit -------------------------------------------------------------------------------


class BatchBackend(DeliveryBackend):
    """A backend that does not report each hand-over: what the journal said when it sent."""

    name = "batch"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.batches: list[tuple[list[int], set[int]]] = []

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        self.batches.append(([m.send_id for m in messages], set(self.journal.state().handed)))
        return [SendResult(m.send_id, SendStatus.SENT, provider_id="b") for m in messages]


def test_transmit_journals_a_batch_backends_hand_over_before_send_and_its_outcomes(
    ledger: RunLedger,
) -> None:
    held = claimed(ledger, 2)
    messages = ledger.hand_over([message(r.id or 0, n) for n, r in enumerate(held)])
    backend = BatchBackend(ledger.journal)
    results = ledger.transmit(backend, messages)
    ids = [m.send_id for m in messages]
    assert backend.batches == [(ids, set(ids))]
    assert sorted(ledger.journal.state().outcomes) == sorted(ids)
    assert [r.send_id for r in results] == ids


def test_transmit_of_nothing_sends_nothing(ledger: RunLedger) -> None:
    backend = BatchBackend(ledger.journal)
    assert ledger.transmit(backend, []) == []
    assert backend.batches == []


# -- the lease --------------------------------------------------------------------------------


def test_renewing_moves_the_expiry_of_held_rows_only(engine: Engine, ledger: RunLedger) -> None:
    held = claimed(ledger, 4)
    ids = [r.id or 0 for r in held]
    ledger.hand_over([message(ids[1], 1)])
    ledger.record([SendResult(ids[1], SendStatus.SENT)])
    ledger.hand_over([message(ids[3], 3)])
    set_rows(engine, [ids[2]], owner=OTHER)
    later = utcnow() + timedelta(days=1)
    ledger.keeper._renew(later)  # what the keeper's thread calls every third of the lease
    after = rows(engine)
    assert as_utc(after["u0"].lease_expires) == later
    assert as_utc(after["u3"].lease_expires) == later
    assert after["u1"].lease_expires is None
    assert as_utc(after["u2"].lease_expires) != later


# -- reconcile.settle_unknown -----------------------------------------------------------------


def test_settle_unknown_applies_the_first_event_to_unknown_rows_only(
    engine: Engine, ledger: RunLedger
) -> None:
    held = claimed(ledger, 4)
    ids = [r.id or 0 for r in held]
    set_rows(engine, ids[:3], status=LedgerStatus.UNKNOWN, lease_expires=None)
    set_rows(engine, [ids[3]], status=LedgerStatus.DEFERRED)
    opened = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    later = opened + timedelta(hours=1)
    with Session(engine.db) as session:
        settled = settle_unknown(
            session,
            [
                (ids[0], LedgerStatus.SENT, opened),
                (ids[0], LedgerStatus.FAILED, later),  # a second event: too late
                (ids[1], LedgerStatus.FAILED, opened),
                (ids[2], LedgerStatus.DEFERRED, opened),  # not an outcome it applies
                (ids[3], LedgerStatus.SENT, opened),  # not unknown
            ],
        )
        session.commit()
    assert settled == 2
    after = rows(engine)
    assert (after["u0"].status, as_utc(after["u0"].sent_at), after["u0"].error) == (
        LedgerStatus.SENT,
        opened,
        None,
    )
    assert (after["u1"].status, after["u1"].sent_at, after["u1"].error) == (
        LedgerStatus.FAILED,
        None,
        HARD_BOUNCE_ERROR,
    )
    assert after["u2"].status == LedgerStatus.UNKNOWN
    assert (after["u3"].status, after["u3"].sent_at) == (LedgerStatus.DEFERRED, None)


def test_settle_unknown_with_nothing_unknown_writes_nothing(
    engine: Engine, ledger: RunLedger
) -> None:
    (held,) = claimed(ledger, 1)
    with Session(engine.db) as session:
        assert settle_unknown(session, [(held.id or 0, LedgerStatus.SENT, utcnow())]) == 0
        assert settle_unknown(session, []) == 0
    assert rows(engine)["u0"].status == LedgerStatus.PENDING


def test_settle_unknown_finds_rows_beyond_the_first_chunk(
    engine: Engine, ledger: RunLedger
) -> None:
    held = claimed(ledger, 1001)
    ids = sorted(r.id or 0 for r in held)
    set_rows(engine, ids, status=LedgerStatus.UNKNOWN, lease_expires=None)
    now = utcnow()
    with Session(engine.db) as session:
        settled = settle_unknown(session, [(i, LedgerStatus.SENT, now) for i in ids])
        session.commit()
    assert settled == 1001
    assert {r.status for r in rows(engine).values()} == {LedgerStatus.SENT}


# -- the journal's bytes and the lease's end --------------------------------------------------


def test_a_journal_parses_from_its_first_record_and_trusts_only_this_boot() -> None:
    header = json.dumps({"boot": boot_id(), "pid": 1}).encode()
    state = parse(
        header
        + b"\nH 5\nS 5 p-5\nH 6\nO "
        + json.dumps([6, "temporary_failure", None, "421", False]).encode()
        + b"\nH 7"
    )
    assert state == JournalState(
        complete=boot_id() is not None,
        handed={5, 6},  # the torn last line (H 7) is not read
        outcomes={
            5: SendResult(5, SendStatus.SENT, "p-5"),
            6: SendResult(6, SendStatus.TEMPORARY_FAILURE, None, "421", False),
        },
    )
    other_boot = json.dumps({"boot": "another-boot", "pid": 1}).encode()
    assert parse(other_boot + b"\nH 5\n") == JournalState(complete=False, handed={5})
    assert parse(b'{"boot": nu') == JournalState(complete=False)  # torn header
    damaged = parse(header + b"\nH 5\nH five\nH 6\n")  # a line it cannot read
    assert damaged == JournalState(complete=False, handed={5, 6})


def test_a_lease_is_over_at_the_moment_it_expires() -> None:
    now = utcnow()
    assert expired(now, now)
    assert not expired(now + timedelta(seconds=1), now)
    assert expired(None, now)


def test_every_kind_of_outcome_reads_back_from_the_journal_file(ledger: RunLedger) -> None:
    answers = [
        SendResult(1, SendStatus.SENT, "p-1"),
        SendResult(2, SendStatus.SENT, "has space"),
        SendResult(3, SendStatus.SENT),
        SendResult(4, SendStatus.SENT, "p-4", "warning"),
        SendResult(5, SendStatus.PERMANENT_FAILURE, None, "550 no", True),
        SendResult(6, SendStatus.TEMPORARY_FAILURE, "p-6", "421 later"),
        SendResult(7, SendStatus.UNKNOWN),
    ]
    for result in answers:
        ledger.journal.outcome(result)
    ledger.journal.sync()
    lines = ledger.journal.path.read_bytes().split(b"\n")[1:-1]
    assert lines[0] == b"S 1 p-1" and all(line.startswith(b"O [") for line in lines[1:])
    state = parse(ledger.journal.path.read_bytes())
    assert state.outcomes == {r.send_id: r for r in answers}


def test_reset_cuts_a_long_journal_back_to_its_header(
    ledger: RunLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "CUT_BYTES", 64)
    header = ledger.journal.path.read_bytes()
    for n in range(20):
        ledger.journal.handing_over(message(n))
    ledger.journal.reset()
    ledger.journal.handing_over(message(99))
    ledger.journal.sync()
    assert ledger.journal.path.read_bytes() == header + b"H 99\n"


def test_an_owner_id_names_a_worker_only_with_a_host_and_a_tag() -> None:
    assert Worker.parse("mail-1.example/77-cafe") == Worker("mail-1.example", "77-cafe")
    assert Worker.parse("odd/host/77-cafe") == Worker("odd/host", "77-cafe")
    assert [Worker.parse(bad) for bad in ("garbage", "/77-cafe", "mail-1.example/")] == [None] * 3


def test_a_rows_fate_when_its_worker_stops() -> None:
    failed = SendResult(1, SendStatus.PERMANENT_FAILURE, None, "550 no")
    state = JournalState(complete=True, handed={1, 2}, outcomes={1: failed})
    assert fate(LedgerStatus.PENDING, 1, None) == Fate(LedgerStatus.DEFERRED, NEVER_LEFT)
    assert fate(LedgerStatus.PENDING, 1, None, legacy=True) == Fate(LedgerStatus.UNKNOWN, LEGACY)
    assert fate(LedgerStatus.HANDED_OVER, 1, state) == Fate(LedgerStatus.FAILED, "550 no", failed)
    assert fate(LedgerStatus.HANDED_OVER, 2, state) == Fate(LedgerStatus.UNKNOWN, IN_FLIGHT)


def test_recover_settles_only_dead_or_unknown_holders_and_counts_them(
    engine: Engine, ledger: RunLedger
) -> None:
    live = RunLedger(engine, "r1", "alerts")  # another worker of this host, alive
    live.join()
    live.claim([row("r1", 0), row("r1", 1)])
    remote, _ = ledger.claim([row("r1", 2)])  # handed to a worker on another host below
    strange, _ = ledger.claim([row("r1", 7)])
    set_rows(
        engine,
        [r.id or 0 for r in remote],
        owner=OTHER,
        lease_expires=utcnow() + timedelta(hours=1),
    )
    set_rows(engine, [strange[0].id or 0], owner="garbage")
    old_rows, _ = ledger.claim([row("r1", 8)])
    other_run = RunLedger(engine, "r2", "digest")
    old_elsewhere, _ = other_run.claim([row("r2", 9)])
    set_rows(engine, [old_rows[0].id or 0, old_elsewhere[0].id or 0], owner=None)  # pre-lease
    assert ledger.recover() == 2  # the unparsable owner's row and this run's pre-lease row
    after = rows(engine)
    assert (after["u7"].status, after["u7"].error) == (LedgerStatus.UNKNOWN, LEGACY)
    assert (after["u8"].status, after["u9"].status) == (LedgerStatus.UNKNOWN, LedgerStatus.PENDING)
    assert [after[u].status for u in ("u0", "u1", "u2")] == [LedgerStatus.PENDING] * 3
    set_rows(engine, [r.id or 0 for r in remote], lease_expires=utcnow() - timedelta(seconds=1))
    assert ledger.recover() == 1
    assert rows(engine)["u2"].status == LedgerStatus.DEFERRED
    live.keeper.stop()
    live.journal.close()  # discards by default
    assert not live.journal.path.exists()


def test_closing_a_journal_twice_or_after_its_file_went_is_quiet(ledger: RunLedger) -> None:
    ledger.journal.path.unlink()
    ledger.journal.close()
    ledger.journal.close()
    assert not ledger.journal.path.exists()


def test_a_second_close_of_a_journal_closes_no_other_descriptor(ledger: RunLedger) -> None:
    ledger.journal.close()
    saved = os.dup(1)  # a closed journal that closed descriptor 1 would take stdout with it
    try:
        ledger.journal.close()
        stdout_open = _is_open(1)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert stdout_open


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_dead_journal_stays_while_its_worker_holds_rows_of_another_run(
    engine: Engine, ledger: RunLedger
) -> None:
    dead = RunLedger(engine, "r2", "digest")  # this host, run r2; dies below
    dead.open(None, [])
    held = claimed(dead, 4)
    messages = dead.hand_over([message(r.id or 0, n) for n, r in enumerate(held[:3])])
    dead.journal.handing_over(messages[0])
    dead.journal.outcome(SendResult(messages[0].send_id, SendStatus.SENT, provider_id="p0"))
    dead.journal.handing_over(messages[1])  # with the transport when the worker died
    dead.keeper.stop()
    dead.journal.close(discard=False)  # what its death leaves: the file, unlocked
    empty = Journal(ledger.journal_dir, "0-empty").open()  # a dead worker holding nothing
    empty.close(discard=False)

    assert ledger.recover() == 0  # run r1: none of its rows were the dead workers'
    assert dead.journal.path.exists()  # the evidence r2's recovery needs
    assert not empty.path.exists()
    before = rows(engine)
    assert [(before[f"u{n}"].status, before[f"u{n}"].owner) for n in range(4)] == [
        (LedgerStatus.HANDED_OVER, dead.owner)
    ] * 3 + [(LedgerStatus.PENDING, dead.owner)]

    heir = RunLedger(engine, "r2", "digest")
    assert heir.recover() == 4
    after = rows(engine)
    assert [(after[f"u{n}"].status, after[f"u{n}"].error) for n in range(4)] == [
        (LedgerStatus.SENT, None),
        (LedgerStatus.UNKNOWN, IN_FLIGHT),
        (LedgerStatus.DEFERRED, NEVER_LEFT),  # handed over, never journaled: never left
        (LedgerStatus.DEFERRED, NEVER_LEFT),
    ]
    assert after["u0"].provider_id == "p0"
    assert {(r.owner, r.lease_expires) for r in after.values()} == {(dead.owner, None)}
    assert not dead.journal.path.exists()


def test_a_local_worker_without_a_journal_is_settled_by_its_lease(
    engine: Engine, ledger: RunLedger
) -> None:
    gone = Worker.new().host + "/0-gone"  # this host, but no journal file: lease decides
    held, _ = ledger.claim([row("r1", 0)])
    set_rows(engine, [held[0].id or 0], owner=gone, lease_expires=utcnow() + timedelta(hours=1))
    assert ledger.recover() == 0
    set_rows(engine, [held[0].id or 0], lease_expires=utcnow() - timedelta(seconds=1))
    assert ledger.recover() == 1
    assert rows(engine)["u0"].status == LedgerStatus.DEFERRED


def test_a_dead_journal_whose_rows_all_settled_is_deleted(
    engine: Engine, ledger: RunLedger
) -> None:
    # A worker dies after its last outcome is recorded, before it discards its journal:
    # every row it owns is final, so the journal holds nothing anyone needs any more.
    dead = RunLedger(engine, "r2", "digest")
    dead.open(None, [])
    held = claimed(dead, 2)
    messages = dead.hand_over([message(r.id or 0, n) for n, r in enumerate(held)])
    dead.record([SendResult(m.send_id, SendStatus.SENT, provider_id="p") for m in messages])
    dead.keeper.stop()
    dead.journal.close(discard=False)
    assert {(r.owner, r.status) for r in rows(engine).values()} == {(dead.owner, LedgerStatus.SENT)}
    assert ledger.recover() == 0
    assert not dead.journal.path.exists()  # not kept for rows that are all sent


# -- reconcile_unknown: unknown -> sent | deferred, from what the backend knows ----------------


def outbox_engine(project: Project) -> Engine:
    return project.engine("outbox")


def test_reconcile_unknown_settles_this_runs_unknown_rows_from_the_outbox(
    sqlite_project: Project,
) -> None:
    engine = outbox_engine(sqlite_project)
    ledger = RunLedger(engine, "r1", "alerts")
    ledger.open(None, [])
    try:
        held = claimed(ledger, 3)
        ids = [r.id or 0 for r in held]
        ledger.hand_over([message(ids[2], 2)])
        ledger.record([SendResult(ids[2], SendStatus.SENT, provider_id="kept")])
        set_rows(engine, ids[:2], status=LedgerStatus.UNKNOWN, error=IN_FLIGHT)
        other = RunLedger(engine, "r2", "digest")
        elsewhere, _ = other.claim([row("r2", 5)])
        set_rows(engine, [elsewhere[0].id or 0], status=LedgerStatus.UNKNOWN, error=IN_FLIGHT)
        folder = engine.settings.path("outbox")
        folder.mkdir()
        for send_id in (ids[0], ids[2], elsewhere[0].id or 0):  # all but ids[1] were written
            (folder / eml_name(send_id)).write_bytes(b"Subject: s\r\n\r\nbody\r\n")

        before = utcnow()
        assert ledger.reconcile_unknown() == 2  # this run's two unknown rows, no more
        after = rows(engine)
        assert (after["u0"].status, after["u0"].provider_id) == (
            LedgerStatus.SENT,
            eml_name(ids[0]),
        )
        assert after["u0"].sent_at is not None and as_utc(after["u0"].sent_at) >= before
        assert (after["u1"].status, after["u1"].sent_at) == (LedgerStatus.DEFERRED, None)
        assert "never written" in (after["u1"].error or "")
        assert (after["u2"].status, after["u2"].provider_id) == (LedgerStatus.SENT, "kept")
        assert after["u5"].status == LedgerStatus.UNKNOWN  # another run's row is its own
        assert ledger.reconcile_unknown() == 0  # nothing unknown is left in r1
    finally:
        ledger.keeper.stop()


def test_reconcile_unknown_settles_nothing_with_a_backend_that_cannot_tell(
    engine: Engine, ledger: RunLedger
) -> None:
    held = claimed(ledger, 1)
    set_rows(engine, [held[0].id or 0], status=LedgerStatus.UNKNOWN, error=IN_FLIGHT)
    assert ledger.reconcile_unknown() == 0  # the memory backend knows nothing afterwards
    assert rows(engine)["u0"].status == LedgerStatus.UNKNOWN


# -- the lease keeper ---------------------------------------------------------------------------


def test_the_lease_keeper_renews_before_each_lease_runs_out_until_stopped() -> None:
    renewals: list[tuple[datetime, datetime]] = []  # (when, the new expiry)
    beat = threading.Event()

    def renew(expiry: datetime) -> None:
        renewals.append((utcnow(), expiry))
        beat.set()

    keeper = LeaseKeeper(timedelta(seconds=3), renew)
    started = utcnow()
    keeper.start()
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == "ledger-lease"]
        assert thread.daemon  # a worker that ends without stopping it still exits
        deadline = time.monotonic() + 30
        while len(renewals) < 3:
            assert time.monotonic() < deadline, "the keeper never renewed"
            beat.wait(1)
            beat.clear()
    finally:
        keeper.stop()
    assert not [t for t in threading.enumerate() if t.name == "ledger-lease"]
    count = len(renewals)
    time.sleep(1.5)
    assert len(renewals) == count  # stopped: no beat after stop
    # Every renewal comes before the expiry the one before it set (the first before the
    # lease taken at start ran out), and sets a full lease from its own moment.
    expiries = [started + keeper.lease] + [expiry for _, expiry in renewals]
    for (moment, expiry), previous in zip(renewals, expiries, strict=False):
        assert moment < previous
        assert abs(expiry - moment - keeper.lease) < timedelta(seconds=1)


def test_a_journal_is_private_to_its_user_in_a_folder_created_with_its_parents(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "state" / "journal"  # neither exists yet
    journal = Journal(folder, "1-abcd").open()
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
        header = json.loads(journal.path.read_bytes().splitlines()[0])
        assert header["boot"] == boot_id()
    finally:
        journal.close()


def test_the_journal_syncs_each_write_to_disk_soon_after_and_survives_a_failed_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {t for t in threading.enumerate() if t.name == "journal-fsync"}
    journal = Journal(tmp_path, "1-abcd").open()
    inode = journal.path.stat().st_ino
    synced: list[int] = []
    failures = [OSError(5, "a disk hiccup")]  # the first sync after a write fails
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        if os.fstat(fd).st_ino == inode:
            if failures:
                raise failures.pop()
            synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)

    def wait_for_syncs(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(synced) < n:
            assert time.monotonic() < deadline, "the journal's syncer never synced"
            time.sleep(journal.sync_interval)

    try:
        (syncer,) = {t for t in threading.enumerate() if t.name == "journal-fsync"} - before
        assert syncer.daemon  # a worker that ends without closing it still exits
        journal.handing_over(message(7))
        deadline = time.monotonic() + 30
        while failures:  # the syncer took the write and hit the failure
            assert time.monotonic() < deadline, "the journal's syncer never tried"
            time.sleep(journal.sync_interval)
        journal.outcome(SendResult(7, SendStatus.SENT))
        wait_for_syncs(1)  # the syncer outlived the failure and synced the next write
        time.sleep(journal.sync_interval * 20)
        assert len(synced) == 1  # nothing new written: nothing synced
        journal.handing_over(message(8))
        wait_for_syncs(2)
    finally:
        journal.close()
    assert not syncer.is_alive()


def test_a_journal_that_vanishes_during_the_scan_does_not_hide_the_next_dead_one(
    tmp_path: Path,
) -> None:
    (tmp_path / f"1-aaaa{journal_module.SUFFIX}").symlink_to(tmp_path / "gone")  # no file
    Journal(tmp_path, "2-bbbb").open().close(discard=False)  # dead: unlocked, left behind
    assert journal_module.dead_journals(tmp_path) == ["2-bbbb"]


def test_a_failed_lease_renewal_is_logged_with_its_cause_and_the_next_beat_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[datetime] = []

    def renew(expiry: datetime) -> None:
        calls.append(expiry)
        if len(calls) == 1:
            raise OSError("database unreachable")

    LeaseKeeper(timedelta(seconds=3), renew).stop()  # never started: stopping is quiet
    keeper = LeaseKeeper(timedelta(seconds=0.3), renew)
    with caplog.at_level(logging.WARNING, logger="engine.ledger.lease"):
        keeper.start()
        try:
            deadline = time.monotonic() + 30
            while len(calls) < 2:
                assert time.monotonic() < deadline, "the keeper gave up after a failure"
                time.sleep(0.05)
        finally:
            keeper.stop()
    [record] = [r for r in caplog.records if r.name == "engine.ledger.lease"]
    assert record.getMessage() == "could not renew the ledger lease"
    assert record.exc_info is not None and str(record.exc_info[1]) == "database unreachable"


def test_a_journal_never_opened_touches_no_descriptor(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "1-abcd")
    saved = os.dup(1)  # an unopened journal that took descriptor 1 for its own would close it
    try:
        journal.sync()
        journal.reset()
        journal.close()
        stdout_open = _is_open(1)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert stdout_open
    assert journal.state() == JournalState(complete=True)
    assert not journal.path.exists()
