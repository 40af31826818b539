"""``tailormail subscriptions``: subscribe a URL (the secret printed once), list, dispatch,
inspect and replay dead letters, remove; every refusal is one ``error:`` line, exit 2."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from kit.cli import cli
from kit.project import TEST_SECRET, Project

from engine.clock import SimulatedClock, use_clock
from engine.db import session_scope
from engine.feedback.status_webhooks import BACKOFF, OutboundPolicy, dispatch_due, enqueue


def test_subscriptions_on_the_command_line(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAILORMAIL_SECRET", TEST_SECRET)
    monkeypatch.chdir(sqlite_project.root)
    engine = sqlite_project.configure("memory")

    def run(*args: str, status: int = 0) -> str:
        assert cli(monkeypatch, "subscriptions", *args) == status
        printed = capsys.readouterr()
        if status:
            assert printed.err.startswith("error: "), printed.err
        return " ".join((printed.out + printed.err).split())

    assert "must be https" in run("add", "http://127.0.0.1/hook", status=2)
    assert "127.0.0.1 is a loopback address" in run("add", "https://127.0.0.1/", status=2)
    assert "nope" in run("add", "https://127.0.0.1:9/", "-c", "nope", "--allow-private", status=2)
    assert "unknown webhook event opened" in run(
        "add", "https://127.0.0.1:9/", "-e", "opened", "--allow-private", status=2
    )
    added = run(
        "add", "https://127.0.0.1:9/hook", "--allow-private", "-e", "clicked", "-c", "alerts"
    )
    match = re.search(
        r"subscription (wh_\w+): https://127.0.0.1:9/hook \(clicked of alerts\)", added
    )
    secret = re.search(r"whsec_\S+", added)
    assert match is not None and secret is not None and "not shown again" in added
    sub_id = match.group(1)
    listed = run("list")
    assert listed.startswith(f"{sub_id} https://127.0.0.1:9/hook clicked of alerts; made ")
    assert listed.endswith("by the command line") and secret.group() not in listed

    clock = SimulatedClock(datetime.now(UTC))
    with use_clock(clock):
        with session_scope(engine.db) as session:
            enqueue(session, trigger_id="t1", campaign="alerts", event_type="clicked", data={})
        assert run("dispatch") == "0 delivered, 1 to retry, 0 dead"  # nothing listens on :9
        assert run("dead-letters") == "No dead letters."
        clock.advance(BACKOFF[0])
        policy = OutboundPolicy(max_attempts=2)
        assert dispatch_due(engine.db, policy=policy).dead == 1
        dead = run("dead-letters")
        found = re.fullmatch(rf"(\d+) {sub_id} clicked of trigger t1 2 attempts from .*", dead)
        assert found is not None and "cannot connect to 127.0.0.1" in dead
        assert "a dead delivery's id or --all" in run("replay", status=2)
        assert "not 'x'" in run("replay", "x", status=2)
        delivery_id = found.group(1)
        assert run("replay", delivery_id) == "1 delivery back in line"
        assert run("replay", "--all") == "0 deliveries back in line"

    assert "no webhook subscription has the id 'wh_nope'" in run("remove", "wh_nope", status=2)
    assert f"subscription {sub_id}" in run("remove", sub_id)
    assert re.search(r"by the command line, removed \d{4}-\d\d-\d\d \d\d:\d\d$", run("list"))
    engine.close()
