"""Before sending: preview, ``send --test-to`` and ``send --dry-run`` leave no trace.

Done when 6: the ledger, runs, events, suppressions, rewards and models are the same
before and after; a test send's links redirect and record nothing, and its unsubscribe
link unsubscribes nobody.
"""

from __future__ import annotations

import email.policy
import os
import re
import subprocess
import sys
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Project
from sqlmodel import SQLModel, select

from engine.app import Engine
from engine.db import session_scope
from engine.models import (
    CampaignSuppressionRow,
    EventRow,
    LedgerRow,
    ModelVersionRow,
    RewardRow,
    RunRow,
    SuppressionRow,
)
from engine.pipeline import run_campaign
from engine.rehearsal import RehearsalError, dry_run, render_variants, send_test, write_preview
from engine.rewards import join_rewards
from engine.web import BackgroundServer
from engine.web.tokens import TEST_SEND_ID

TABLES: tuple[type[SQLModel], ...] = (
    LedgerRow,
    RunRow,
    EventRow,
    SuppressionRow,
    CampaignSuppressionRow,
    RewardRow,
    ModelVersionRow,
)


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a send or the learning writes."""
    with session_scope(engine.db) as session:
        return {
            table.__name__: [row.model_dump() for row in session.scalars(select(table))]
            for table in TABLES
        }


def test_preview_test_send_and_dry_run_leave_ledger_and_model_untouched(
    sqlite_project: Project, tmp_path: Path
) -> None:
    sqlite_project.add_campaign("alerts", policy="vw")
    with BackgroundServer(sqlite_project.engine()) as server:
        engine = sqlite_project.engine(tracking_base_url=server.url)
        sqlite_project.seed(engine, people=6)
        run_campaign(engine, "alerts", run_id="r1")  # a real run: a ledger and a model to keep
        join_rewards(engine)
        before = snapshot(engine)
        assert before["LedgerRow"] and before["RunRow"]
        sent_before = len(engine.memory_outbox)  # type: ignore[attr-defined]

        previews = write_preview(render_variants(engine, "alerts", recipient_id="u003"), tmp_path)
        results = send_test(engine, "alerts", "tester@example.org")
        report = dry_run(engine, "alerts")

        tested = engine.memory_outbox[sent_before:]  # type: ignore[attr-defined]
        with httpx.Client(trust_env=False, timeout=10) as http:
            links = [re.findall(r'href="([^"]+/c/[^"]+)"', m.html) for m in tested]
            clicked = http.get(links[0][0], follow_redirects=False)
            unsubscribe = tested[0].headers["List-Unsubscribe"].strip("<>")
            one_click = http.post(unsubscribe, content=b"List-Unsubscribe=One-Click")
            page = http.get(unsubscribe)
            opened = http.get(re.findall(r'src="([^"]+/o/[^"]+)"', tested[0].html)[0])
        server.drain()
        after = snapshot(engine)

    assert after == before  # nothing recorded, learned, suppressed or claimed
    assert sorted(p.name for p in previews) == ["a.eml", "a.html", "b.eml", "b.html"]
    parsed = BytesParser(policy=email.policy.default).parsebytes((tmp_path / "a.eml").read_bytes())
    assert parsed["To"] == "user3@example.com" and "Hi Name3" in (tmp_path / "a.html").read_text()
    assert [r.status.value for r in results] == ["sent", "sent"]
    assert [(m.to_address, m.send_id) for m in tested] == [
        ("tester@example.org", TEST_SEND_ID),
        ("tester@example.org", TEST_SEND_ID),
    ]
    assert [m.metadata["variant"] for m in tested] == ["a", "b"]
    assert all(m.subject.startswith("[test] ") for m in tested)
    assert clicked.status_code == 302 and clicked.headers["location"].startswith("https://")
    assert one_click.status_code == 200 and "nobody was unsubscribed" in one_click.text
    assert page.status_code == 200 and "test send" in page.text
    assert opened.status_code == 200
    assert report.summary.audience == 6 and report.summary.sent == 6
    assert sum(report.summary.variants.values()) == 6 and len(report.would_send) == 6


def test_a_dry_run_reports_skips_with_their_reasons(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=4)
    with session_scope(engine.db) as session:
        session.add(SuppressionRow(email="user2@example.com", reason="complaint"))
    report = dry_run(engine, "alerts")
    assert (report.summary.sent, report.summary.skipped) == (3, 1)
    assert dict(report.skip_reasons) == {"suppressed (complaint)": 1}
    assert "user2@example.com" not in [to for to, _, _ in report.would_send]
    with session_scope(engine.db) as session:
        assert session.scalars(select(LedgerRow)).first() is None
        assert session.scalars(select(RunRow)).first() is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: render_variants(e, "alerts", variant="zz"), "has no variant 'zz'"),
        (lambda e: render_variants(e, "alerts", recipient_id="nobody"), "unknown recipient"),
        (lambda e: send_test(e, "alerts", "not-an-address"), "is not an email address"),
    ],
)
def test_mistakes_are_named(sqlite_project: Project, call: Any, message: str) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=2)
    with pytest.raises(RehearsalError, match=message):
        call(engine)


def test_the_cli_exits_2_with_a_clear_error_for_each_mistake(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=2)
    config = f'database_url = "{sqlite_project.db_url}"\n[delivery]\nbackend = "memory"\n'
    (sqlite_project.root / "config" / "tailormail.toml").write_text(config)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    env = clean | {"TAILORMAIL_SECRET": "test-secret-0123456789-0123456789-01", "COLUMNS": "200"}
    mistakes = {
        ("preview", "nope"): "unknown campaign 'nope'",
        ("preview", "alerts", "--variant", "zz"): "has no variant 'zz'",
        ("preview", "alerts", "--recipient", "ghost"): "unknown recipient 'ghost'",
        ("send", "alerts", "--test-to", "x@example.org", "--dry-run"): "not both",
    }
    for args, expected in mistakes.items():
        done = subprocess.run(
            [sys.executable, "-m", "engine", "--project", str(sqlite_project.root), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr
