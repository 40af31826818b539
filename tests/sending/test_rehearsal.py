"""Before sending: preview, ``send --test-to`` and ``send --dry-run`` leave no trace.

Done when 6: the ledger, runs, events, suppressions, rewards and models are the same
before and after; a test send's links redirect and record nothing, and its unsubscribe
link unsubscribes nobody. Issue 18: a dry run decides under a run id it prints, and
``send --new-run ID`` sends what it showed or says what changed since (the executors and
databases: ``test_rehearsal_matrix.py``).
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
from kit.project import Project
from sqlmodel import SQLModel, select

from engine.app import Engine
from engine.db import session_scope
from engine.errors import TailormailError
from engine.feedback.reward_job import join_rewards
from engine.models import (
    CampaignSuppressionRow,
    EventRow,
    LedgerRow,
    ModelVersionRow,
    RewardRow,
    RunRow,
    SuppressionRow,
)
from engine.sending.real_run import run_campaign
from engine.sending.rehearsal import (
    RehearsalError,
    dry_run,
    render_variants,
    send_test,
    write_preview,
)
from engine.tokens import TEST_SEND_ID
from engine.web import BackgroundServer

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
        ("send", "alerts", "--dry-run", "--run", "r1"): "cannot resume one: drop --run",
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


def cli(project: Project, *args: str) -> Any:
    """Run ``tailormail --project ROOT ARGS`` in this process; the Click result."""
    from typer.testing import CliRunner

    from engine.cli.commands import app

    return CliRunner().invoke(app, ["--project", str(project.root), *args], env={"COLUMNS": "300"})


def ledger_variants(engine: Engine, run_id: str) -> dict[str, str]:
    """Each recipient's variant in run ``run_id`` (``-``: skipped), by address."""
    with session_scope(engine.db) as session:
        rows = session.scalars(select(LedgerRow).where(LedgerRow.run_id == run_id)).all()
    return {r.email: r.variant or "-" for r in rows}


@pytest.fixture
def cli_project(sqlite_project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """``sqlite_project`` with a config the CLI opens (outbox backend), 40 people, one
    of them suppressed."""
    monkeypatch.setenv("TAILORMAIL_SECRET", "test-secret-0123456789-0123456789-01")
    engine = sqlite_project.configure("outbox")
    sqlite_project.seed(engine, people=40)
    with session_scope(engine.db) as session:
        session.add(SuppressionRow(email="user7@example.com", reason="complaint"))
    return sqlite_project


def test_send_new_run_with_the_dry_runs_id_sends_what_it_showed(cli_project: Project) -> None:
    rehearsed = cli(cli_project, "send", "alerts", "--dry-run")
    assert rehearsed.exit_code == 0, rehearsed.output
    [run_id] = re.findall(
        r"to send exactly this: tailormail send alerts --new-run (\S+)", rehearsed.output
    )
    shown = dict(re.findall(r"^  (\S+@example\.com)  \[(\w)\]", rehearsed.output, re.M))
    assert len(shown) == 10 and "skipped 1: suppressed (complaint)" in rehearsed.output
    engine = cli_project.engine()
    [record] = (cli_project.root / "rehearsals").glob("*.json")
    assert record.stat().st_mode & 0o777 == 0o600
    assert "example.com" not in record.read_text() and '"u0' not in record.read_text()

    sent = cli(cli_project, "send", "alerts", "--new-run", run_id)
    assert sent.exit_code == 0, sent.output
    assert "40 of 40 recipients got the variant (or skip) the dry run showed\n" in sent.output
    variants = ledger_variants(engine, run_id)
    assert len(variants) == 40 and variants["user7@example.com"] == "-"
    assert {to: variants[to] for to in shown} == shown  # the lines the dry run printed
    assert len(list((cli_project.root / "outbox").glob("*.eml"))) == 39
    assert not record.exists()  # the run is the ledger's to tell now
    again = cli(cli_project, "send", "alerts", "--new-run", run_id)
    assert isinstance(again.exception, TailormailError)  # `tailormail` exits 2 with it
    assert str(again.exception) == (
        f"run {run_id!r} already exists (campaign 'alerts'); resume it with --run {run_id}"
    )
    unknown = cli(cli_project, "send", "alerts", "--new-run", "by-hand-1")
    assert unknown.exit_code == 0, unknown.output
    assert "no dry run of alerts made run by-hand-1: sending it as a new run" in unknown.output
    rehearse_again = cli(cli_project, "send", "alerts", "--dry-run", "--new-run", run_id)
    assert isinstance(rehearse_again.exception, RehearsalError)
    assert "already exists (campaign 'alerts'): a dry run rehearses a new run" in str(
        rehearse_again.exception
    )


def test_every_recipient_of_the_send_gets_what_the_dry_run_showed(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("alerts", policy="vw")  # a learned policy's pmf, seeded
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=30)
    report = dry_run(engine, "alerts", run_id="rehearsed")
    run_campaign(engine, "alerts", run_id="rehearsed")
    assert ledger_variants(engine, "rehearsed") == {to: v for to, v, _ in report.would_send}
    assert report.summary.run_id == "rehearsed" and len(report.would_send) == 30


def test_send_new_run_says_what_changed_since_the_dry_run(cli_project: Project) -> None:
    engine = cli_project.engine()
    report = dry_run(engine, "alerts", run_id="rehearsed")
    assert (report.summary.skipped, report.summary.sent) == (1, 39)
    cli_project.seed(engine, people=42)  # two people join
    with session_scope(engine.db) as session:  # one unsubscribes, a model is promoted
        session.add(SuppressionRow(email="user2@example.com", reason="unsubscribe"))
        blob = engine.make_policy(engine.campaign("alerts")).save()
        session.add(ModelVersionRow(campaign="alerts", version="v2", policy="uniform", blob=blob))

    sent = cli(cli_project, "send", "alerts", "--new-run", "rehearsed")
    assert sent.exit_code == 0, sent.output
    output = " ".join(sent.output.split())
    later = "this run may send otherwise than it showed"
    assert f"warning: the model changed since the dry run (none yet -> v2); {later}" in output
    assert (
        "warning: the audience changed since the dry run: 2 joined, 0 left "
        f"(40 -> 42 recipients); {later}"
    ) in output
    assert (
        "39 of 40 recipients got the variant (or skip) the dry run showed "
        "(another variant or skip: 1; not in the dry run: 2)"
    ) in output
    variants = ledger_variants(engine, "rehearsed")
    skipped = sorted(to for to, variant in variants.items() if variant == "-")
    assert skipped == ["user2@example.com", "user7@example.com"] and len(variants) == 42
    with session_scope(engine.db) as session:
        run = session.get(RunRow, "rehearsed")
    assert run is not None and run.model_version == "v2"  # it said so before sending
