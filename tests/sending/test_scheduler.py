"""Scheduler wiring: cron jobs per campaign, the reward job, explicit misfire settings."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger
from kit.project import Project
from sqlmodel import Session, select

from engine.models import RunRow
from engine.sending.scheduler import add_one_off, build_scheduler, latest_tick


def test_latest_tick_is_the_last_fire_time_at_or_before_now() -> None:
    trigger = CronTrigger.from_crontab("0 9 * * *", timezone="UTC")
    now = datetime(2026, 11, 28, 9, 0, 3, tzinfo=UTC)
    assert latest_tick(trigger, now, timedelta(hours=1)) == now.replace(second=0)
    later = datetime(2026, 11, 28, 9, 59, tzinfo=UTC)
    assert latest_tick(trigger, later, timedelta(hours=1)) == now.replace(second=0)
    assert latest_tick(trigger, later + timedelta(hours=1), timedelta(hours=1)) is None


def test_jobs_carry_explicit_misfire_and_coalesce_settings(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("unscheduled")
    path = sqlite_project.root / "config" / "campaigns" / "unscheduled.toml"
    path.write_text(path.read_text().replace('schedule = "0 9 * * *"\n', ""))
    engine = sqlite_project.engine(scheduler={"misfire_grace_seconds": 120, "coalesce": True})
    scheduler = build_scheduler(engine)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"campaign:alerts", "rewards", "retry-deferred", "train"}
    assert jobs["train"].trigger.interval.days == 7  # challengers weekly by default
    job = jobs["campaign:alerts"]
    assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (120, True, 1)
    assert str(job.trigger).startswith("cron[")


def test_one_off_runs_go_through_the_scheduler(sqlite_project: Project) -> None:
    from engine.sending.real_run import run_campaign

    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=5)
    scheduler = build_scheduler(engine, start_rewards=False)
    done = threading.Event()

    def job() -> None:
        run_campaign(engine, "alerts", run_id="via-scheduler")
        done.set()

    scheduler.start()
    try:
        add_one_off(scheduler, job, job_id="one-off")
        assert done.wait(30)
    finally:
        scheduler.shutdown(wait=True)
    with Session(engine.db) as session:
        run = session.exec(select(RunRow)).one()
    assert (run.id, run.status) == ("via-scheduler", "finished")
    assert len(engine.memory_outbox) == 5
