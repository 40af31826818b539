"""Staying deliverable: webhook bounces and complaints, pauses, unknown sends settled.

Done when 5: a hard bounce arriving by webhook stops the next run from mailing that
address; a complaint rate over the threshold pauses the campaign (in ``runs`` and the
log), and ``tailormail resume`` lets it send again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid

import httpx
import pytest
from kit.project import Project
from kit.providers import PostmarkSigner, signed_request
from sqlmodel import col, select

from engine.app import Engine
from engine.db import session_scope
from engine.feedback.events import record_event
from engine.models import LedgerRow, LedgerStatus, RunRow, SuppressionRow, utcnow
from engine.sending.deliverability import active_pause, resume
from engine.sending.real_run import run_campaign
from engine.sending.run_history import paused_campaigns
from engine.settings import load_settings
from engine.types import EventType, TrackingEvent
from engine.web import BackgroundServer

STRICT = """
[deliverability]
window = 10
min_sends = 5
max_complaint_rate = 0.1
"""


def webhook_engine(project: Project, signer: PostmarkSigner) -> Engine:
    """An engine of ``project`` (memory backend) with the Postmark webhook configured."""
    settings = load_settings(
        project_dir=project.root,
        environ={"TAILORMAIL_SECRET": "test-secret-0123456789-0123456789-01"},
        overrides={
            "database_url": project.db_url,
            "delivery": {"backend": "memory"},
            "plugins": {"webhooks": {"postmark": signer.options()}},
        },
    )
    return Engine(settings=settings, load_entry_points=False)


def sends(engine: Engine, run_id: str) -> dict[str, LedgerRow]:
    with session_scope(engine.db) as session:
        rows = session.scalars(select(LedgerRow).where(col(LedgerRow.run_id) == run_id))
        return {row.email: row for row in rows}


def post_event(
    client: httpx.Client, signer: PostmarkSigner, kind: str, row: LedgerRow
) -> httpx.Response:
    assert row.id is not None
    headers, body = signed_request(signer, kind, row.id, row.email)
    return client.post("/webhooks/postmark", content=body, headers=headers)


@pytest.fixture
def postmark(monkeypatch: pytest.MonkeyPatch) -> PostmarkSigner:
    signer = PostmarkSigner()
    monkeypatch.setenv("TEST_POSTMARK_PASSWORD", signer.password)
    return signer


def test_a_hard_bounce_by_webhook_stops_the_next_run_mailing_the_address(
    project: Project, postmark: PostmarkSigner
) -> None:
    engine = webhook_engine(project, postmark)
    project.seed(engine, people=3)
    run_campaign(engine, "alerts", run_id="r1")
    bounced = sends(engine, "r1")["user1@example.com"]
    with (
        BackgroundServer(webhook_engine(project, postmark)) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client,
    ):
        assert post_event(client, postmark, "bounce", bounced).status_code == 200
    outbox = engine.memory_outbox  # type: ignore[attr-defined]
    before = len(outbox)
    second = run_campaign(engine, "alerts", run_id="r2")
    mailed = [m.to_address for m in outbox[before:]]
    assert "user1@example.com" not in mailed and len(mailed) == 2
    assert (second.sent, second.skipped) == (2, 1)
    assert sends(engine, "r2")["user1@example.com"].skip_reason == "suppressed (hard_bounce)"


def test_a_complaint_rate_over_the_threshold_pauses_the_campaign(
    sqlite_project: Project, postmark: PostmarkSigner, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite_project.add_campaign("alerts", extra=STRICT)
    engine = webhook_engine(sqlite_project, postmark)
    sqlite_project.seed(engine, people=10)
    run_campaign(engine, "alerts", run_id="r1")
    rows = sends(engine, "r1")
    with (
        BackgroundServer(webhook_engine(sqlite_project, postmark)) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client,
        caplog.at_level(logging.WARNING),
    ):
        post_event(client, postmark, "complaint", rows["user1@example.com"])
        assert active_pause(engine.db, "alerts") is None  # 1 in 10 is not above 10%
        post_event(client, postmark, "complaint", rows["user2@example.com"])
    pause = active_pause(engine.db, "alerts")
    assert pause is not None and pause.metric == "complaint rate"
    assert pause.reason == (
        "complaint rate 20.00% over its last 10 sends is above the threshold of 10.00%"
    )
    assert "campaign alerts paused itself" in caplog.text

    stopped = run_campaign(engine, "alerts", run_id="r2")
    assert stopped.paused == pause.reason and stopped.sent == 0
    with session_scope(engine.db) as session:
        run = session.get(RunRow, "r2")
    assert run is not None and run.status == "paused"
    assert run.error == f"campaign paused: {pause.reason}"
    assert "run r2 stopped: campaign alerts is paused" in caplog.text

    assert resume(engine.db, "alerts") is not None and paused_campaigns(engine.db) == []
    resumed = run_campaign(engine, "alerts", run_id="r2")
    assert resumed.sent == 8  # the two who complained are suppressed
    assert resume(engine.db, "alerts") is None  # not paused any more


def test_a_resumed_campaign_counts_its_rates_afresh(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("alerts", extra=STRICT)
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=10)
    run_campaign(engine, "alerts", run_id="r1")
    for row in list(sends(engine, "r1").values())[:2]:
        complain(engine, row)
    assert active_pause(engine.db, "alerts") is not None
    resume(engine.db, "alerts")
    complain(engine, sends(engine, "r1")["user5@example.com"])  # an old send: no new pause
    assert active_pause(engine.db, "alerts") is None


def complain(engine: Engine, row: LedgerRow) -> None:
    event = TrackingEvent(EventType.COMPLAINT, row.id, utcnow(), provider_event_id=uuid.uuid4().hex)
    record_event(engine, event, dedupe_key=f"test:{event.provider_event_id}")


def test_a_hard_bounce_rate_over_the_threshold_pauses_too(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("alerts", extra=STRICT.replace("complaint", "hard_bounce"))
    fail_for = ["user1@example.com", "user2@example.com"]
    engine = sqlite_project.engine(delivery={"memory": {"fail_for": fail_for}})
    sqlite_project.seed(engine, people=10)
    summary = run_campaign(engine, "alerts", run_id="r1")
    assert summary.failed == 2
    pause = active_pause(engine.db, "alerts")
    assert pause is not None and pause.metric == "hard-bounce rate"
    with session_scope(engine.db) as session:
        reasons = {s.email: s.reason for s in session.scalars(select(SuppressionRow))}
    assert reasons == {"user1@example.com": "hard_bounce", "user2@example.com": "hard_bounce"}


@pytest.mark.parametrize(
    ("kind", "settled"),
    [("delivered", LedgerStatus.SENT), ("bounce", LedgerStatus.FAILED)],
)
def test_an_unknown_send_is_settled_by_the_providers_event(
    sqlite_project: Project, postmark: PostmarkSigner, kind: str, settled: str
) -> None:
    engine = webhook_engine(sqlite_project, postmark)
    sqlite_project.seed(engine, people=2)
    run_campaign(engine, "alerts", run_id="r1")
    row = sends(engine, "r1")["user0@example.com"]
    with session_scope(engine.db) as session:
        stored = session.get(LedgerRow, row.id)
        assert stored is not None
        stored.status, stored.sent_at, stored.provider_id = LedgerStatus.UNKNOWN, None, None
        session.add(stored)
    with (
        BackgroundServer(webhook_engine(sqlite_project, postmark)) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client,
    ):
        assert post_event(client, postmark, kind, row).status_code == 200
        # A later event never rewrites the settled outcome.
        assert post_event(client, postmark, "complaint", row).status_code == 200
    after = sends(engine, "r1")["user0@example.com"]
    assert after.status == settled
    assert (after.sent_at is not None) == (settled == LedgerStatus.SENT)


def test_an_unknown_send_is_found_by_its_message_id(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=1)
    run_campaign(engine, "alerts", run_id="r1")
    row = sends(engine, "r1")["user0@example.com"]
    with session_scope(engine.db) as session:
        stored = session.get(LedgerRow, row.id)
        assert stored is not None and stored.message_id is not None
        stored.status, stored.provider_id = LedgerStatus.UNKNOWN, None
        session.add(stored)
    bare = stored.message_id.strip("<>")
    event = TrackingEvent(EventType.DELIVERED, None, utcnow(), provider_message_id=bare)
    assert record_event(engine, event, dedupe_key="test:delivered")
    assert sends(engine, "r1")["user0@example.com"].status == LedgerStatus.SENT


def test_runs_shows_the_pause_and_resume_lifts_it(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("alerts", extra=STRICT)
    config = f'database_url = "{sqlite_project.db_url}"\n[delivery]\nbackend = "memory"\n'
    (sqlite_project.root / "config" / "tailormail.toml").write_text(config)
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=10)
    run_campaign(engine, "alerts", run_id="r1")
    for row in list(sends(engine, "r1").values())[:2]:
        complain(engine, row)
    run_campaign(engine, "alerts", run_id="r2")  # stops at once: paused

    def tailormail(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
        env = clean | {
            "TAILORMAIL_SECRET": "test-secret-0123456789-0123456789-01",
            "COLUMNS": "250",
        }
        command = [sys.executable, "-m", "engine", "--project", str(sqlite_project.root), *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == expect and "Traceback" not in done.stderr, done.stderr
        return done

    refused = tailormail("send", "alerts", expect=1).stderr
    assert "campaign alerts paused itself: complaint rate 20.00%" in refused
    assert "Resume with `tailormail resume alerts`" in refused
    listed = tailormail("runs").stdout
    assert "campaign alerts PAUSED since" in listed
    assert "complaint rate 20.00% over its last 10 sends" in listed
    assert "resume with `tailormail resume alerts`" in listed
    assert "r2 paused: campaign paused: complaint rate" in listed
    resumed = tailormail("resume", "alerts").stdout
    assert "campaign alerts resumed" in resumed
    assert "tailormail send alerts --run r2" in resumed
    assert "PAUSED" not in tailormail("runs").stdout
    assert "not paused" in tailormail("resume", "alerts").stdout
