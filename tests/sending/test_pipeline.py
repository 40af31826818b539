"""The campaign run: exactly-once delivery, resumption, skips and pre-flight template checks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from kit.project import Project
from sqlmodel import Session, select

from engine import DeliveryBackend, Message, SendResult, SendStatus, hookimpl
from engine.errors import TemplateError
from engine.models import LedgerRow, LedgerStatus, RunRow, SuppressionRow
from engine.sending.pipeline import run_id_for
from engine.sending.real_run import real_run, run_campaign
from engine.sending.scheduler import run_scheduled


def ledger(engine: object) -> list[LedgerRow]:
    with Session(engine.db) as session:  # type: ignore[attr-defined]
        return list(session.exec(select(LedgerRow).order_by(LedgerRow.id)).all())


def delivered_to(engine: object) -> list[str]:
    return [m.to_address for m in getattr(engine, "memory_outbox", [])]


def test_a_run_started_twice_delivers_nothing_twice(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=30)
    first = run_campaign(engine, "alerts", run_id="manual-1")
    second = run_campaign(engine, "alerts", run_id="manual-1")
    assert (first.sent, second.sent, second.already_done) == (30, 0, 30)
    addresses = delivered_to(engine)
    assert len(addresses) == 30 == len(set(addresses))
    rows = ledger(engine)
    assert len(rows) == 30
    assert all(r.status == LedgerStatus.SENT and r.sent_at is not None for r in rows)
    assert all(r.probability == pytest.approx(0.5) and r.pmf for r in rows)
    assert all(r.links and r.message_id for r in rows)


def test_the_same_schedule_tick_fired_again_resumes_the_same_run(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=12)
    fired = datetime(2026, 11, 28, 9, 0, 7, tzinfo=UTC)  # the 09:00 tick, a little late
    first = run_scheduled(engine, "alerts", now=fired)
    again = run_scheduled(engine, "alerts", now=fired.replace(second=40))
    assert first is not None and again is not None
    assert first.run_id == again.run_id == run_id_for("alerts", fired.replace(second=0))
    assert (first.sent, again.sent) == (12, 0)
    assert len(delivered_to(engine)) == 12
    with Session(engine.db) as session:
        runs = session.exec(select(RunRow)).all()
    assert [r.status for r in runs] == ["finished"]


class CrashingBackend(DeliveryBackend):
    """Delivers the first batch, then dies mid-send as a process kill would."""

    name = "crashing"
    sent: list[str] = []

    def __init__(self, engine: object, crash_on_batch: int = 2) -> None:
        self.crash_on_batch = crash_on_batch
        self.batches = 0

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        self.batches += 1
        if self.batches == self.crash_on_batch:
            CrashingBackend.sent.append(messages[0].to_address)  # one left before the crash
            raise ConnectionResetError("connection lost mid-batch")
        CrashingBackend.sent.extend(m.to_address for m in messages)
        return [SendResult(m.send_id, SendStatus.SENT, provider_id=m.message_id) for m in messages]


class CrashingPlugin:
    @staticmethod
    @hookimpl
    def register_backends(register):  # type: ignore[no-untyped-def]
        register("crashing", CrashingBackend)


def test_resuming_an_interrupted_run_never_resends(project: Project) -> None:
    CrashingBackend.sent = []
    engine = project.engine(
        backend="crashing", plugins=[CrashingPlugin()], delivery={"batch_size": 5}
    )
    project.seed(engine, people=20)
    with pytest.raises(ConnectionResetError):
        run_campaign(engine, "alerts", run_id="run-7")
    rows = ledger(engine)
    assert [r.status for r in rows].count(LedgerStatus.SENT) == 5
    assert [r.status for r in rows].count(LedgerStatus.UNKNOWN) == 5  # ambiguous batch
    # `tailormail send alerts --run run-7` after the interruption, on a healthy backend.
    resumed = project.engine(backend="memory")
    summary = run_campaign(resumed, "alerts", run_id="run-7")
    assert (summary.already_done, summary.sent) == (10, 10)
    everyone = CrashingBackend.sent + delivered_to(resumed)
    assert len(everyone) == len(set(everyone)) == 16  # 5 + 1 before the crash, 10 after
    assert len(ledger(resumed)) == 20


def test_a_live_workers_pending_rows_are_left_alone_until_it_stops(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=6)
    run = real_run(engine, engine.campaign("alerts"), "shared")
    run._open_run(None)
    people = engine.audience(engine.campaign("alerts"))
    run._prepare_models(people[0])
    # This worker claimed two rows and is still alive (its lease held) when another resumes.
    claimed = run._claim(run._decide(people[:2]))
    assert len(claimed) == 2
    other = run_campaign(project.engine(), "alerts", run_id="shared")
    assert (other.already_done, other.sent) == (2, 4)
    assert sorted(r.status for r in ledger(engine)) == ["pending"] * 2 + ["sent"] * 4
    # The first worker stops without sending: its rows never left, so they are retried.
    run._close_run("failed", "stopped")
    assert {r.status for r in ledger(engine) if r.id in {c.id for c in claimed}} == {"deferred"}
    last = run_campaign(engine, "alerts", run_id="shared")
    assert (last.retried, last.sent) == (2, 2)
    assert sorted(r.status for r in ledger(engine)) == ["sent"] * 6


def test_decisions_are_reproducible_from_the_decision_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    choices = []
    for copy in ("one", "two"):
        project = Project(tmp_path / copy, f"sqlite:///{tmp_path}/{copy}.db")
        engine = project.engine()
        project.seed(engine, people=40)
        run_campaign(engine, "alerts", run_id="same-run")
        choices.append([(r.recipient_id, r.variant) for r in ledger(engine)])
    assert choices[0] == choices[1]
    assert {v for _, v in choices[0]} == {"a", "b"}


def test_suppressed_recipients_get_a_skip_row_without_a_decision(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=5)
    with Session(engine.db) as session:
        session.add(SuppressionRow(email="user3@example.com", reason="unsubscribe"))
        session.commit()
    summary = run_campaign(engine, "alerts", run_id="r")
    assert (summary.sent, summary.skipped) == (4, 1)
    skipped = [r for r in ledger(engine) if r.status == LedgerStatus.SKIPPED]
    assert len(skipped) == 1
    row = skipped[0]
    assert row.email == "user3@example.com" and row.skip_reason == "suppressed (unsubscribe)"
    assert row.variant is None and row.probability is None and row.context is None
    assert "user3@example.com" not in delivered_to(engine)


def test_frequency_cap_skips_recent_recipients(project: Project) -> None:
    project.add_campaign("capped", extra='frequency_cap = "1d"')
    engine = project.engine()
    project.seed(engine, people=4)
    assert run_campaign(engine, "capped", run_id="one").sent == 4
    second = run_campaign(engine, "capped", run_id="two")
    assert (second.sent, second.skipped) == (0, 4)
    assert {r.skip_reason for r in ledger(engine) if r.run_id == "two"} == {
        "frequency cap (capped: one email per 1d)"
    }


def test_a_broken_template_is_caught_before_anything_is_sent(sqlite_project: Project) -> None:
    template = sqlite_project.root / "templates" / "t" / "b.html"
    template.write_text("<p>{{ recipient.no_such_attribute }}</p>")
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=5)
    with pytest.raises(TemplateError, match=r"variant 'b' \(t/b.html, line 1\)"):
        run_campaign(engine, "alerts", run_id="r")
    assert delivered_to(engine) == []
    assert ledger(engine) == []


class GreylistingBackend(DeliveryBackend):
    """Answers 451 (try later) to one address the first time, like a greylisting server."""

    name = "greylisting"
    seen: list[str] = []

    def __init__(self, engine: object) -> None:
        pass

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for m in messages:
            if m.to_address == "user2@example.com" and m.to_address not in self.seen:
                GreylistingBackend.seen.append(m.to_address)
                results.append(SendResult(m.send_id, SendStatus.TEMPORARY_FAILURE, error="451"))
            else:
                GreylistingBackend.seen.append(m.to_address)
                results.append(SendResult(m.send_id, SendStatus.SENT))
        return results


class GreylistingPlugin:
    @staticmethod
    @hookimpl
    def register_backends(register):  # type: ignore[no-untyped-def]
        register("greylisting", GreylistingBackend)


def test_temporary_failures_are_deferred_and_retried_once_on_resume(project: Project) -> None:
    GreylistingBackend.seen = []
    engine = project.engine(backend="greylisting", plugins=[GreylistingPlugin()])
    project.seed(engine, people=4)
    first = run_campaign(engine, "alerts", run_id="grey")
    assert (first.sent, first.deferred) == (3, 1)
    deferred = [r for r in ledger(engine) if r.status == LedgerStatus.DEFERRED]
    assert [r.email for r in deferred] == ["user2@example.com"]
    second = run_campaign(engine, "alerts", run_id="grey")
    # The retried row is counted once: retried, then sent; not "already done" as well.
    assert (second.retried, second.sent, second.deferred, second.already_done) == (1, 1, 0, 3)
    rows = ledger(engine)
    assert {r.status for r in rows} == {LedgerStatus.SENT}
    retried = next(r for r in rows if r.email == "user2@example.com")
    assert (retried.id, retried.variant) == (deferred[0].id, deferred[0].variant)  # same decision
    assert sorted(GreylistingBackend.seen) == sorted(
        [
            "user0@example.com",
            "user1@example.com",
            "user2@example.com",
            "user2@example.com",
            "user3@example.com",
        ]
    )
    assert run_campaign(engine, "alerts", run_id="grey").sent == 0


def test_a_deferred_recipient_who_unsubscribed_meanwhile_is_not_retried(
    sqlite_project: Project,
) -> None:
    GreylistingBackend.seen = []
    engine = sqlite_project.engine(backend="greylisting", plugins=[GreylistingPlugin()])
    sqlite_project.seed(engine, people=4)
    run_campaign(engine, "alerts", run_id="grey")
    with Session(engine.db) as session:
        session.add(SuppressionRow(email="user2@example.com", reason="unsubscribe"))
        session.commit()
    again = run_campaign(engine, "alerts", run_id="grey")
    assert (again.retried, again.sent) == (0, 0)
    row = next(r for r in ledger(engine) if r.email == "user2@example.com")
    assert (row.status, row.error) == (LedgerStatus.FAILED, "not retried: suppressed (unsubscribe)")


def test_the_retry_job_resumes_runs_with_deferred_rows(sqlite_project: Project) -> None:
    from engine.sending.scheduler import retry_deferred

    GreylistingBackend.seen = []
    engine = sqlite_project.engine(backend="greylisting", plugins=[GreylistingPlugin()])
    sqlite_project.seed(engine, people=4)
    run_campaign(engine, "alerts", run_id="grey")
    run_campaign(engine, "alerts", run_id="clean")  # user2 is not greylisted any more
    (summary,) = retry_deferred(engine)
    assert (summary.run_id, summary.retried, summary.sent) == ("grey", 1, 1)
    assert retry_deferred(engine) == []
    assert GreylistingBackend.seen.count("user2@example.com") == 3  # 451, retry, second run


def test_two_workers_racing_on_one_run_send_each_email_once(project: Project) -> None:
    import threading

    engines = [project.engine(delivery={"batch_size": 7}) for _ in range(3)]
    project.seed(engines[0], people=120)
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def work(engine: object) -> None:
        try:
            start.wait()
            run_campaign(engine, "alerts", run_id="contended")  # type: ignore[arg-type]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    sent = [address for engine in engines for address in delivered_to(engine)]
    assert len(sent) == len(set(sent)) == 120
    rows = ledger(engines[0])
    assert len(rows) == 120 and {r.status for r in rows} == {LedgerStatus.SENT}
