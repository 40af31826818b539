"""Past one process: a large run split into shards, sent by a local process pool or by
Celery workers on the Redis broker, each recipient exactly once, even when a worker dies.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from kit.project import TEST_SECRET, Project, stop_processes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.app import Engine
from engine.audience.filters import shard_bounds
from engine.errors import ConfigError
from engine.models import LedgerRow, LedgerStatus, RunRow
from engine.sending.pipeline import CampaignRun
from engine.sending.real_run import real_run, run_campaign
from engine.sending.shard_tasks import ShardRefused, ShardTask, sign_task
from engine.sending.shards import ShardHost, run_shard

SECRET = TEST_SECRET
CELERY_RECIPIENTS = int(os.environ.get("TAILORMAIL_TEST_CELERY_RECIPIENTS", "2000"))
"""The Celery run's size: CI's by default; ``TAILORMAIL_TEST_CELERY_RECIPIENTS=20000``
shows the issue's full-size run."""


@pytest.fixture(autouse=True)
def shared_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of a project shares its link secret (workers inherit it)."""
    monkeypatch.setenv("TAILORMAIL_SECRET", SECRET)


def open_run(engine: Engine, campaign: str, run_id: str) -> CampaignRun:
    """Open (or resume) run ``run_id`` as its coordinator does, heartbeat and all; the
    caller closes it with ``run.ledger.close(status)``."""
    run = real_run(engine, engine.campaign(campaign), run_id)
    run._open_run(None)
    return run


def shard_task(engine: Engine, run: CampaignRun, after: str = "", until: str | None = None) -> dict:
    """The signed task a coordinator sends for ``run``'s ids in (after, until]."""
    pinned = run.ledger.model_version()
    return sign_task(engine, ShardTask(run.run_id, run.campaign.name, after, until, pinned))


def _ledger(engine: object, run_id: str) -> list[LedgerRow]:
    with Session(engine.db) as session:  # type: ignore[attr-defined]
        stmt = select(LedgerRow).where(LedgerRow.run_id == run_id)
        return list(session.scalars(stmt))


def test_shard_bounds_cover_the_audience_once(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=25)
    bounds = shard_bounds(engine.db, {}, 10)
    assert bounds == [("", "u009"), ("u009", "u019"), ("u019", None)]
    ids = [
        r.recipient_id
        for after, until in bounds
        for page in engine.audience_pages(engine.campaign("alerts"), 7, bounds=(after, until))
        for r in page
    ]
    assert ids == [f"u{i:03d}" for i in range(25)]


@pytest.mark.slow
def test_a_local_process_pool_sends_each_recipient_once(project: Project) -> None:
    workers = {"executor": "local", "processes": 2, "shard_size": 40}
    # The workers read the project's config (a duration included) from its directory.
    engine = project.configure(
        "outbox", workers=workers, delivery={"batch_size": 15}, frequency_cap="1h"
    )
    project.seed(engine, people=200)
    shards: list[tuple[int, int]] = []
    summary = run_campaign(
        engine, "alerts", run_id="big", shard_progress=lambda *done: shards.append(done)
    )
    rows = _ledger(engine, "big")
    assert len(rows) == 200 and {r.status for r in rows} == {LedgerStatus.SENT}
    # The shards' counts reach the coordinator's summary, and the rows they wrote are
    # not counted again as "already done" by its sweep after them.
    assert (summary.sent, summary.already_done) == (200, 0)
    assert len({r.owner for r in rows}) >= 2  # more than one worker process sent
    with Session(engine.db) as session:
        run = session.get(RunRow, "big")
    assert run is not None and (run.status, run.shards) == ("finished", 5)
    assert shards[-1] == (5, 5) and shards == sorted(shards)  # the bar's "shards 5/5"
    assert len(list((project.root / "outbox").glob("*.eml"))) == 200


@pytest.mark.slow
def test_shards_that_fail_on_their_workers_are_reported_and_their_recipients_still_sent(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workers = {"executor": "local", "processes": 2, "shard_size": 40}
    engine = project.configure("outbox", workers=workers, delivery={"batch_size": 15})
    project.seed(engine, people=120)
    # The pool's processes start after this: each has another secret and refuses its shard.
    monkeypatch.setenv("TAILORMAIL_SECRET", "another-secret-" + "x" * 30)
    summary = run_campaign(engine, "alerts", run_id="refused")
    rows = _ledger(engine, "refused")
    assert len(rows) == 120 and {r.status for r in rows} == {LedgerStatus.SENT}
    assert len({r.owner for r in rows}) == 1  # the coordinator sent them all
    assert (summary.sent, summary.already_done) == (120, 0)
    (reason, count), *others = summary.shard_errors.items()
    assert (count, summary.shards, others) == (3, 3, [])
    assert reason.startswith("ShardRefused: the task's MAC does not verify")
    assert "same TAILORMAIL_SECRET" in reason


@pytest.mark.slow
def test_a_thread_pool_runs_every_shard_on_the_coordinators_own_engine(
    sqlite_project: Project,
) -> None:
    # 20 shards on 4 threads: each shard used to build an engine of its own in a
    # module-global cache, without a lock, and some failed with KeyError: 'config'.
    workers = {"executor": "thread", "processes": 4, "shard_size": 10}
    engine = sqlite_project.configure("outbox", workers=workers, delivery={"batch_size": 5})
    sqlite_project.seed(engine, people=200)
    summary = run_campaign(engine, "alerts", run_id="threads")
    assert (summary.shards, summary.shard_errors) == (20, {})
    rows = _ledger(engine, "threads")
    assert len(rows) == 200 and {r.status for r in rows} == {LedgerStatus.SENT}
    assert len({r.owner for r in rows}) >= 4  # shards' own ledger workers, not the sweep


def test_a_worker_process_builds_its_engine_from_its_own_project(
    sqlite_project: Project,
) -> None:
    engine = sqlite_project.configure(frequency_cap="1d", retention="90d", workers={"processes": 3})
    # What a spawned pool process receives from its initializer: the project, no engine.
    host = pickle.loads(pickle.dumps(ShardHost.of(engine, real_run)))
    worker = host.engine()
    assert worker is not engine and host.engine() is worker  # built once per process
    assert worker.settings.model_dump(exclude={"secret"}) == engine.settings.model_dump(
        exclude={"secret"}
    )
    assert worker.settings.frequency_cap == timedelta(days=1)
    assert ShardHost.of(engine, real_run).engine() is engine  # threads share the coordinator's


def test_a_worker_with_another_secret_refuses_the_shard(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sqlite_project.configure()
    sqlite_project.seed(engine, people=5)
    run = open_run(engine, "alerts", "r1")
    task = shard_task(engine, run)
    monkeypatch.setenv("TAILORMAIL_SECRET", "another-secret-" + "x" * 30)
    try:
        with pytest.raises(ShardRefused, match="same TAILORMAIL_SECRET"):
            run_shard(task, ShardHost(sqlite_project.root, real_run, load_entry_points=False))
    finally:
        run.ledger.close("finished")
    assert _ledger(engine, "r1") == []


def test_a_shard_task_must_match_its_workers_plugins_and_its_runs_campaign_and_model(
    sqlite_project: Project,
) -> None:
    import types

    engine = sqlite_project.configure()
    sqlite_project.seed(engine, people=5)
    run = open_run(engine, "alerts", "r1")
    extra = types.ModuleType("acme_plugin")  # a plugin only the coordinator has
    coordinator = Engine(settings=engine.settings, plugins=[extra], load_entry_points=False)
    worker = ShardHost.of(engine, real_run)
    try:
        with pytest.raises(ShardRefused, match=r"plugins differ .*\['acme_plugin==-'\]"):
            run_shard(shard_task(coordinator, run), worker)
        shard = ShardTask("r1", "other", "", None, run.ledger.model_version())
        with pytest.raises(ShardRefused, match="run 'r1' is a run of campaign 'alerts'"):
            run_shard(sign_task(engine, shard), worker)
        shard = ShardTask("r1", "alerts", "", None, "vw-0001")
        with pytest.raises(ShardRefused, match="run 'r1' pinned model None, the task names"):
            run_shard(sign_task(engine, shard), worker)
        assert _ledger(engine, "r1") == []  # nothing written by any refused task
        assert run_shard(shard_task(engine, run), worker)["sent"] == 5  # the genuine one
    finally:
        run.ledger.close("finished")


def test_every_worker_of_a_run_decides_with_the_model_pinned_at_its_start(
    sqlite_project: Project,
) -> None:
    from engine.feedback.reward_job import join_rewards
    from engine.models import utcnow

    sqlite_project.add_campaign("learning", policy="vw")
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=10)
    run_campaign(engine, "learning", run_id="r1")
    first = join_rewards(engine, now=utcnow() + timedelta(hours=2)).model_versions["learning"]
    # r2 starts and pins the champion of now; a promotion during r2 changes nothing in it.
    run_campaign(engine, "learning", run_id="r2")
    assert {r.model_version for r in _ledger(engine, "r2")} == {first}
    with Session(engine.db) as session:
        assert session.get(RunRow, "r2").model_version == first  # type: ignore[union-attr]
    # A shard of r2 (a worker joining late) decides with r2's pinned model too.
    sqlite_project.write_people(12)
    from engine.audience.importer import import_file

    import_file(engine.db, "recipients", sqlite_project.root / "people.csv")
    run_campaign(engine, "learning", run_id="r1")  # r1's window: a second model
    second = join_rewards(engine, now=utcnow() + timedelta(hours=4)).model_versions.get("learning")
    assert second is not None and second != first
    resumed = open_run(engine, "learning", "r2")  # its coordinator is back, the shard valid
    try:
        run_shard(shard_task(engine, resumed), ShardHost.of(engine, real_run))
    finally:
        resumed.ledger.close("finished")
    late = [r for r in _ledger(engine, "r2") if r.recipient_id in ("u010", "u011")]
    assert len(late) == 2 and {r.model_version for r in late} == {first}


def _rows_written(engine: object, run_id: str) -> int:
    with Session(engine.db) as session:  # type: ignore[attr-defined]
        stmt = select(func.count()).where(LedgerRow.run_id == run_id)
        return int(session.scalar(stmt) or 0)


def _worker(root: Path, log: Path, queue: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "worker", "-p", str(root), "--pool", "solo"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"TAILORMAIL_SECRET": SECRET},
            cwd=root,
        )


@pytest.mark.slow
def test_two_celery_workers_send_a_run_once_even_when_one_is_killed(
    postgres_url: str, tmp_path: Path
) -> None:
    project = Project(tmp_path / "project", postgres_url)
    size = CELERY_RECIPIENTS
    shard_size = max(200, size // 10)
    queue = f"tm-test-{uuid.uuid4().hex[:8]}"
    celery = {
        "broker_url": "redis://127.0.0.1:6379/14",
        "result_backend": "redis://127.0.0.1:6379/15",
        "queue": queue,
        "visibility_timeout_seconds": 5,
    }
    engine = project.configure(
        "outbox",
        workers={
            "executor": "celery",
            "shard_size": shard_size,
            "stall_seconds": 15,
            "celery": celery,
        },
        delivery={"batch_size": 50, "lease_seconds": 5},
    )
    project.seed(engine, people=size)
    logs = [project.root / f"worker{i}.log" for i in range(2)]
    workers = [_worker(project.root, log, queue) for log in logs]
    outcome: dict[str, object] = {}

    def coordinate() -> None:
        try:
            outcome["summary"] = run_campaign(engine, "alerts", run_id="celery-run")
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    coordinator = threading.Thread(target=coordinate)
    try:
        coordinator.start()
        deadline = time.monotonic() + 120 + size / 20  # fails on a hang only
        while time.monotonic() < deadline and _rows_written(engine, "celery-run") < size // 5:
            time.sleep(0.2)
        workers[0].send_signal(signal.SIGKILL)  # mid-run, holding a shard
        workers[0].wait()
        coordinator.join(timeout=240 + size / 10)
        assert not coordinator.is_alive(), "the run did not finish"
    finally:
        stop_processes(workers)
    assert "error" not in outcome, outcome
    rows = _ledger(engine, "celery-run")
    statuses = {s: sum(1 for r in rows if r.status == s) for s in {r.status for r in rows}}
    assert len(rows) == size, statuses  # one row per recipient: nobody twice, nobody missed
    unknown = statuses.get(LedgerStatus.UNKNOWN, 0)
    assert statuses.get(LedgerStatus.SENT, 0) + unknown == size, statuses
    assert unknown <= 1, statuses  # at most the message in flight when the worker died
    with Session(engine.db) as session:
        sent = session.scalar(
            select(func.count()).where(
                LedgerRow.run_id == "celery-run", LedgerRow.status == LedgerStatus.SENT
            )
        )
    files = list((project.root / "outbox").glob("*.eml"))
    assert len(files) == sent  # each sent message is in the outbox once
    assert "tailormail.run_shard" in logs[1].read_text()  # the survivor worked shards


def test_a_mistyped_shard_executor_stops_start_up_naming_the_key(
    sqlite_project: Project,
) -> None:
    with pytest.raises(ConfigError, match=r"workers.executor: unknown executor 'celerey'"):
        sqlite_project.engine(workers={"executor": "celerey"})
