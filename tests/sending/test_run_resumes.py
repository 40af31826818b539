"""What a resumed run sends (issue 18, "a run says what it did"), on SQLite and PostgreSQL.

Resuming retries the rows that failed for a cause of ours (a template, the configuration),
never a refusal by the recipient's server; a finished run resumed (by hand or by the
deferred-retry job) sends to nobody who joined the audience since; a scheduled tick whose
audience is empty warns and is not a failed run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from kit.project import Project
from sqlmodel import select

from engine import hookimpl
from engine.app import Engine
from engine.audience.importer import import_file
from engine.db import session_scope
from engine.errors import TemplateError
from engine.models import LedgerRow, RunRow
from engine.sending.real_run import run_campaign
from engine.sending.scheduler import retry_deferred, run_scheduled
from engine.types import DeliveryBackend, Message, SendResult, SendStatus

BROKEN = '{% if recipient.id == "u015" %}{{ recipient.nope.deeper }}{% endif %}'
"""A template line that fails for one recipient only (of the second batch of ten)."""


def break_templates(project: Project, broken: bool) -> None:
    """Make both variants fail for recipient u015 (``broken``), or render for everyone."""
    for key in ("a", "b"):
        path = project.root / "templates" / "t" / f"{key}.html"
        text = path.read_text().replace(BROKEN, "")
        path.write_text(text.replace("</body>", BROKEN + "</body>") if broken else text)


def statuses(engine: Engine, run_id: str) -> dict[str, str]:
    """Each recipient's ledger status in ``run_id``."""
    with session_scope(engine.db) as session:
        rows = session.scalars(select(LedgerRow).where(LedgerRow.run_id == run_id)).all()
        return {row.recipient_id: row.status for row in rows}


def sent_to(engine: Engine) -> Counter[str]:
    """How many messages each address got from ``engine``'s memory backend."""
    return Counter(m.to_address for m in getattr(engine, "memory_outbox", []))


def test_resuming_retries_rows_a_template_failed_but_never_a_refusal(project: Project) -> None:
    refused = "user3@example.com"  # the receiving server refuses it: a permanent failure
    engine = project.engine(delivery={"batch_size": 10, "memory": {"fail_for": [refused]}})
    project.seed(engine, people=20)
    break_templates(project, broken=True)
    with pytest.raises(TemplateError):
        run_campaign(engine, "alerts", run_id="r1")
    first = statuses(engine, "r1")
    assert Counter(first.values()) == {"sent": 9, "failed": 11}

    break_templates(project, broken=False)
    fixed = project.engine(delivery={"batch_size": 10, "memory": {"fail_for": [refused]}})
    summary = run_campaign(fixed, "alerts", run_id="r1")
    assert summary.retried == 10  # the second batch: rendering failed, nothing left
    assert summary.sent == 10 and summary.failed == 0
    after = statuses(fixed, "r1")
    assert after["u003"] == "failed"  # refused by the recipient's server: never again
    assert Counter(after.values()) == {"sent": 19, "failed": 1}
    assert set(sent_to(engine).values()) == {1} and set(sent_to(fixed).values()) == {1}
    assert not set(sent_to(engine)) & set(sent_to(fixed))  # nobody got two


class FlakyBackend(DeliveryBackend):
    """Sends to memory, except ``DEFERRED`` addresses: a temporary failure (SMTP 4xx)."""

    name = "flaky"
    deferred = frozenset({"user2@example.com"})

    def __init__(self, engine: Engine | None = None, **options: Any) -> None:
        self.sent: list[Message] = []

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """One result per message: deferred for ``deferred`` addresses, else sent."""
        results = []
        for message in messages:
            if message.to_address in self.deferred:
                results.append(SendResult(message.send_id, SendStatus.TEMPORARY_FAILURE, "451"))
            else:
                results.append(SendResult(message.send_id, SendStatus.SENT))
        return results


class FlakyPlugin:
    """Registers ``FlakyBackend``."""

    @hookimpl
    def register_backends(self, register: Callable[[str, Any], None]) -> None:
        """Register the ``flaky`` backend."""
        register("flaky", FlakyBackend)


def add_newcomer(project: Project, engine: Engine) -> None:
    """A recipient who joins the audience after the run finished."""
    path = project.root / "newcomer.csv"
    path.write_text("id,email,first_name,segment\nu999,new@example.com,New,a\n")
    import_file(engine.db, "recipients", path)


def test_the_retry_job_retries_deferred_rows_and_mails_nobody_new(project: Project) -> None:
    flaky = project.engine("flaky", plugins=[FlakyPlugin()])
    project.seed(flaky, people=6)
    first = run_campaign(flaky, "alerts", run_id="r1")
    assert (first.sent, first.deferred) == (5, 1)
    add_newcomer(project, flaky)

    engine = project.engine()  # the transport works again
    [retried] = retry_deferred(engine)
    assert retried.run_id == "r1" and (retried.retried, retried.sent) == (1, 1)
    assert retried.left_out == 1
    assert sent_to(engine) == {"user2@example.com": 1}  # not new@example.com
    assert "u999" not in statuses(engine, "r1")


def test_resuming_a_finished_run_mails_newcomers_only_when_asked(project: Project) -> None:
    engine = project.engine()
    project.seed(engine, people=6)
    assert run_campaign(engine, "alerts", run_id="r1").sent == 6
    add_newcomer(project, engine)

    again = run_campaign(engine, "alerts", run_id="r1")
    assert (again.sent, again.left_out, again.already_done) == (0, 1, 6)
    asked = run_campaign(engine, "alerts", run_id="r1", include_new=True)
    assert asked.sent == 1 and asked.already_done == 6
    assert sent_to(engine)["new@example.com"] == 1


def test_an_empty_scheduled_tick_warns_and_is_not_a_failed_run(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    project.add_campaign("alerts", extra='audience = { segment = "c" }')
    engine = project.engine()
    project.seed(engine, people=6)  # segments a and b only
    tick = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="engine.sending.scheduler"):
        summary = run_scheduled(engine, "alerts", now=tick)
    assert summary is not None and summary.audience == 0
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert 'segment = "c" matches no recipient (the values of segment are: a, b)' in warning
    with session_scope(engine.db) as session:
        run = session.get(RunRow, summary.run_id)
        assert run is not None and run.status == "finished"
