"""The scheduler leader's share of triggered alerts: it releases scheduled triggers (beside
any API process), purges the API's stores and posts status webhooks, and its retry of
deferred sends leaves trigger runs to their releasers."""

from __future__ import annotations

import time
from datetime import timedelta

from kit.project import Project
from kit.triggers import add_triggered_campaign
from sqlmodel import Session, select

from engine.models import LedgerRow, utcnow
from engine.sending.scheduler import build_scheduler, retry_deferred
from engine.sending.triggers import TriggerDesk, TriggerRequest

DATA = {"kind": "drop", "title": "Lamp", "price": "9", "url": "https://shop.example.com/l"}


def test_the_leader_releases_due_triggers_and_leaves_trigger_runs_out_of_retries(
    project: Project,
) -> None:
    engine = project.engine()
    assert "release" not in {job.id for job in build_scheduler(engine).get_jobs()}
    add_triggered_campaign(project)
    engine = project.engine()
    project.seed(engine, people=4)
    jobs = {job.id: job for job in build_scheduler(engine).get_jobs()}
    assert {"release", "api-purge", "status-webhooks"} <= set(jobs)
    soon = utcnow() + timedelta(milliseconds=300)
    request = TriggerRequest("pricedrop", "u001", data=DATA, send_at=soon)
    [answer] = TriggerDesk(engine).accept([request])
    assert answer["status"] in ("queued", "scheduled")
    time.sleep(max((soon - utcnow()).total_seconds(), 0) + 0.05)
    jobs["release"].func(*jobs["release"].args)  # what the leader runs every few seconds
    with Session(engine.db) as session:
        row = session.exec(select(LedgerRow)).one()
    assert row.status == "sent" and row.trigger_id == answer["trigger_id"]
    with Session(engine.db) as session:
        row.status = "deferred"
        session.add(row)
        session.commit()
    assert retry_deferred(engine) == []  # its releaser retries it, not a resumed run
