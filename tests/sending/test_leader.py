"""One scheduler per database: leader election, failover, and a web tier that never schedules.

The process test runs real ``tailormail serve`` processes against one database: two that
campaign for leadership and four tracking-only ones (``--no-scheduler``). A campaign fires
every two seconds; exactly one process runs each tick, each recipient gets each tick's
email once, and SIGKILL of the leader makes the standby take over.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kit.project import Project, stop_processes
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from engine.campaigns import cron_trigger
from engine.db import make_db
from engine.models import LedgerRow, LedgerStatus, RunRow
from engine.sending.leader import Leadership

SERVE = [sys.executable, "-m", "engine"]


class Recorder:
    """Counts elections and depositions of one ``Leadership``."""

    def __init__(self) -> None:
        self.elected = 0
        self.deposed = 0

    def leadership(self, db_url: str, ttl: float) -> Leadership:
        return Leadership(
            make_db(db_url), on_elected=self.elected_now, on_deposed=self.deposed_now, ttl=ttl
        )

    def elected_now(self) -> None:
        self.elected += 1

    def deposed_now(self) -> None:
        self.deposed += 1


def test_one_lock_holder_and_a_clean_handover(db_url: str) -> None:
    first, second = Recorder(), Recorder()
    a, b = first.leadership(db_url, 0.6), second.leadership(db_url, 0.6)
    assert a.step() is True
    assert b.step() is False and a.step() is True  # renewal keeps it
    assert (first.elected, second.elected) == (1, 0)
    a.stop()  # a clean stop hands the lock back at once
    assert first.deposed == 1
    assert b.step() is True and second.elected == 1


def test_a_dead_leader_loses_the_lock_and_a_standby_takes_it(db_url: str) -> None:
    first, second = Recorder(), Recorder()
    a, b = first.leadership(db_url, 0.6), second.leadership(db_url, 0.6)
    assert a.step() is True
    # The leader stalls: no renewal. PostgreSQL: its connection dies; SQLite: the lease ages.
    lock = a.lock
    if hasattr(lock, "_drop"):
        lock._drop()  # PostgreSQL releases the lock once it sees the connection gone
    else:
        time.sleep(0.8)
    deadline = time.monotonic() + 15  # a standby retries every round; it wins soon
    while not b.step() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b.leading
    # The old leader notices at its next round and stops acting before doing anything.
    assert a.step() is False and first.deposed == 1
    assert b.step() is True


def test_a_six_field_schedule_has_seconds_first() -> None:
    trigger = cron_trigger("*/2 * * * * *")
    assert "second='*/2'" in str(trigger)


def _settings(root: Path, db_url: str) -> None:
    (root / "config" / "tailormail.toml").write_text(
        f'database_url = "{db_url}"\n'
        'from_address = "alerts@example.com"\n'
        '[delivery]\nbackend = "outbox"\n'
        "[scheduler]\nleader_ttl_seconds = 1.5\n"
        "reward_interval_seconds = 3600\nretry_interval_seconds = 3600\n"
    )


def _spawn(root: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = os.environ | {"TAILORMAIL_SECRET": "leader-test-secret-" + "x" * 20}
    with log.open("wb") as out:
        return subprocess.Popen(
            [*SERVE, "serve", "-p", str(root), "--port", "0", *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )


def _finished_runs(db_url: str) -> list[str]:
    db = create_engine(db_url)
    try:
        with Session(db) as session:
            stmt = select(RunRow.id).where(RunRow.status == "finished").order_by(RunRow.id)
            return list(session.scalars(stmt))
    finally:
        db.dispose()


def _wait(predicate: object, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


_STARTS = re.compile(r"tick \S+ \S+ starts run (\S+)")


@pytest.mark.slow
def test_two_serve_processes_and_four_web_processes_act_as_one_scheduler(
    project: Project, db_url: str
) -> None:
    root = project.root
    engine = project.engine()
    project.seed(engine, people=12)
    engine.close()
    _settings(root, db_url)
    path = root / "config" / "campaigns" / "alerts.toml"
    path.write_text(path.read_text().replace('"0 9 * * *"', '"*/2 * * * * *"'))
    logs = [root / f"serve{i}.log" for i in range(2)] + [root / f"web{i}.log" for i in range(4)]
    procs = [_spawn(root, logs[i]) for i in range(2)]
    procs += [_spawn(root, logs[i], "--no-scheduler") for i in range(2, 6)]
    try:
        _wait(lambda: len(_finished_runs(db_url)) >= 3, 90, "three scheduled runs")
        leaders = [i for i in (0, 1) if "became the scheduler leader" in logs[i].read_text()]
        assert len(leaders) == 1, [log.read_text()[-2000:] for log in logs[:2]]
        leader, standby = leaders[0], 1 - leaders[0]
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait()
        killed_at = time.monotonic()
        _wait(
            lambda: "became the scheduler leader" in logs[standby].read_text(),
            60,
            "the standby to take over",
        )
        takeover = time.monotonic() - killed_at
        print(f"takeover after SIGKILL of the leader: {takeover:.2f} s")
        before = len(_finished_runs(db_url))
        _wait(lambda: len(_finished_runs(db_url)) >= before + 2, 60, "runs by the new leader")
    finally:
        stop_processes(procs)
    texts = [log.read_text() for log in logs]
    for web in texts[2:]:  # the web tier never schedules
        assert "scheduler: off" in web and "leader" not in web and "starts run" not in web
    runs_by = [set(_STARTS.findall(text)) for text in texts[:2]]
    # A run is started by one process only (the new leader may finish one the old one
    # was in the middle of when it was killed: at most one such run).
    assert len(runs_by[0] & runs_by[1]) <= 1
    db = make_db(db_url)
    with Session(db) as session:
        sent = session.scalar(select(func.count()).where(LedgerRow.status == LedgerStatus.SENT))
        per_run = session.execute(
            select(LedgerRow.run_id, func.count()).group_by(LedgerRow.run_id)
        ).all()
    db.dispose()
    assert all(count <= 12 for _, count in per_run)  # unique (run, recipient): never twice
    files = list((root / "outbox").glob("*.eml"))
    assert len(files) == sent  # every message in the outbox once, and only sent ones
