"""A rehearsal cannot send, whatever the executor and the database (issue 18, Done when 3).

The matrix: a dry run on each shard executor (inline, ``local``, ``thread``, ``celery``)
on SQLite and PostgreSQL, plus a preview and a test send on both. The project delivers by
SMTP to an aiosmtpd mailbox on loopback, and its runs are large enough to be split into
shards (40 recipients, shards of 10), so any message that leaves, from this process or a
worker, lands in the mailbox. Each cell checks that no ledger row and no run row was
written, that the mailbox got nothing (a test send: only the tester's messages), that no
shard was handed to a worker, and that the report's counts add up to the audience.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kit.project import TEST_SECRET, Project, stop_processes
from kit.smtp import Mailbox, serve
from sqlalchemy import func, select

from engine.app import Engine
from engine.db import session_scope
from engine.models import LedgerRow, RunRow, SuppressionRow
from engine.sending.rehearsal import dry_run, render_variants, send_test, write_preview

PEOPLE = 40
SUPPRESSED = ("user3@example.com", "user17@example.com")
TESTER = "tester@example.org"
# Databases of their own: other tests' workers use 12 to 15.
BROKER = "redis://127.0.0.1:6379/10"
RESULTS = "redis://127.0.0.1:6379/11"


@pytest.fixture(autouse=True)
def shared_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of a project shares its secret (pool and Celery workers inherit it)."""
    monkeypatch.setenv("TAILORMAIL_SECRET", TEST_SECRET)


@contextmanager
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """An SMTP server on loopback that keeps whatever it is sent."""
    handler = Mailbox()
    with serve(handler) as port:
        yield handler, port


def configure(project: Project, port: int, executor: str, **workers: Any) -> Engine:
    """The project's config as a command (and each worker) reads it: SMTP to ``port``, shards
    of 10 on ``executor``; returns its engine with 40 recipients, 2 of them suppressed."""
    engine = project.configure(
        "smtp",
        workers={"executor": executor, "shard_size": 10, "processes": 2, "stall_seconds": 20}
        | workers,
        delivery={"smtp": {"port": port, "timeout": 5, "retries": 0}},
    )
    project.seed(engine, people=PEOPLE)
    with session_scope(engine.db) as session:
        session.add_all(SuppressionRow(email=email, reason="complaint") for email in SUPPRESSED)
    return engine


def rows(engine: Engine) -> tuple[int, int]:
    """How many ledger rows and run rows the database holds."""
    with session_scope(engine.db) as session:
        ledger = session.scalar(select(func.count()).select_from(LedgerRow))
        runs = session.scalar(select(func.count()).select_from(RunRow))
    return int(ledger or 0), int(runs or 0)


def rehearse_and_check(engine: Engine, handler: Mailbox) -> None:
    """Dry-run ``alerts``; assert it left no trace, handed out no shard, and adds up."""
    report = dry_run(engine, "alerts")
    summary = report.summary
    assert (summary.shards, summary.shard_errors) == (0, {})  # no worker was handed anything
    assert rows(engine) == (0, 0)
    assert handler.received == [] and handler.rcpt_attempts == []
    assert (summary.audience, summary.skipped, summary.sent) == (PEOPLE, 2, PEOPLE - 2)
    assert summary.skipped + summary.sent == summary.audience  # never skipped and sent both
    assert (summary.already_done, summary.deferred, summary.failed, summary.unknown) == (0,) * 4
    assert dict(report.skip_reasons) == {"suppressed (complaint)": 2}
    shown = [to for to, _, _ in report.would_send]
    assert len(shown) == len(set(shown)) == PEOPLE - 2 and not set(shown) & set(SUPPRESSED)
    assert sum(summary.variants.values()) == PEOPLE - 2


@pytest.mark.parametrize("executor", ["inline", "local", "thread"])
def test_a_dry_run_sends_nothing_and_hands_no_shard_to_workers(
    db_url: str, tmp_path: Path, executor: str
) -> None:
    project = Project(tmp_path / "project", db_url)
    with mailbox() as (handler, port):
        engine = configure(project, port, executor)
        rehearse_and_check(engine, handler)


@pytest.mark.slow
def test_a_dry_run_hands_no_task_to_a_celery_worker_on_either_database(
    postgres_url: str, tmp_path: Path
) -> None:
    """Both databases in one test, sharing one real ``tailormail worker`` (starting one costs
    seconds, and pytest-xdist would start one per process for separate tests).

    The worker serves one project directory; each cell points its config at its database.
    A worker reads the config at its first task, which a rehearsal never sends; a task that
    does arrive shows in its log and in the run's shard count, whichever database it names.
    """
    redis = pytest.importorskip("redis")
    root = tmp_path / "project"
    queue = f"tm-rehearsal-{uuid.uuid4().hex[:8]}"
    celery = {"broker_url": BROKER, "result_backend": RESULTS, "queue": queue}
    log = tmp_path / "worker.log"
    with mailbox() as (handler, port):
        databases = [f"sqlite:///{tmp_path}/tailormail.db", postgres_url]
        project = Project(root, databases[0])
        engine = configure(project, port, "celery", celery=celery)
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "engine", "worker", "-p", str(root), "--pool", "solo"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | {"TAILORMAIL_SECRET": TEST_SECRET},
                cwd=root,
            )
        try:
            deadline = time.monotonic() + 60  # fails only on a hang
            while "ready." not in log.read_text() and worker.poll() is None:
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.1)
            assert worker.poll() is None, log.read_text()
            for database in databases:
                project.db_url = database
                if database != databases[0]:
                    engine = configure(project, port, "celery", celery=celery)
                rehearse_and_check(engine, handler)
            time.sleep(0.5)  # a task sent at the end would be logged by now
        finally:
            stop_processes([worker])
    assert "received" not in log.read_text()  # the worker never received a task
    assert redis.Redis.from_url(BROKER).llen(queue) == 0  # nor is one waiting for it


def test_a_preview_and_a_test_send_reach_only_the_tester(db_url: str, tmp_path: Path) -> None:
    project = Project(tmp_path / "project", db_url)
    with mailbox() as (handler, port):
        engine = configure(project, port, "local")  # sharded sends: still nothing to shard
        previews = write_preview(render_variants(engine, "alerts"), tmp_path / "preview")
        assert handler.rcpt_attempts == []  # a preview reaches no backend at all
        results = send_test(engine, "alerts", TESTER, recipient_id="u005")
    assert rows(engine) == (0, 0)
    assert sorted(p.name for p in previews) == ["a.eml", "a.html", "b.eml", "b.html"]
    assert [r.status.value for r in results] == ["sent", "sent"]  # one per variant
    assert handler.rcpt_attempts == [TESTER, TESTER]
    assert [envelope.rcpt_tos for _, envelope in handler.received] == [[TESTER], [TESTER]]
    bodies = [envelope.content for _, envelope in handler.received]
    assert all(b"Subject: [test] " in body and b"Name5" in body for body in bodies)
