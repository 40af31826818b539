"""``/metrics`` for the operations team: Prometheus' own parser reads it, it needs its token,
and its figures move when a run in another process sends and when a click arrives."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys

import httpx
from kit.project import ROOT, TEST_SECRET, Project, toml_text
from prometheus_client.parser import text_string_to_metric_families

from engine.web import BackgroundServer

TOKEN = "metrics-token-0123456789"


def _figures(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_parse_need_their_token_and_move_with_sends_and_clicks(project: Project) -> None:
    settings = {"database_url": project.db_url, "delivery": {"backend": "outbox"}}
    (project.root / "config" / "tailormail.toml").write_text(toml_text(settings))
    engine = project.engine(web={"metrics_token": TOKEN})
    project.seed(engine, people=5)
    with BackgroundServer(engine) as server:
        assert httpx.get(f"{server.url}/metrics", trust_env=False).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{server.url}/metrics", headers=wrong, trust_env=False).status_code == 401
        before = _figures(server.url)
        sent = ("tailormail_ledger_rows", (("campaign", "alerts"), ("status", "sent")))
        assert before.get(sent, 0) == 0
        done = subprocess.run(  # another process sends: the gauges read the database
            [sys.executable, "-m", "engine", "send", "alerts", "-p", str(project.root)]
            + ["--new-run", "r1"],
            env={"TAILORMAIL_SECRET": TEST_SECRET, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin"}
            | {"TAILORMAIL_TRACKING_BASE_URL": server.url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert _figures(server.url)[sent] == 5
        outbox = sorted((project.root / "outbox").glob("*.eml"))
        message = email.message_from_bytes(outbox[0].read_bytes(), policy=email.policy.default)
        html = message.get_body(("html",))
        assert html is not None
        link = re.search(r'href="[^"]*(/c/[A-Za-z0-9_-]+)"', html.get_content())
        assert link is not None
        browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"}
        click = httpx.get(server.url + link.group(1), headers=browser, trust_env=False)
        assert click.status_code in (302, 303, 307)
        server.drain()
        after = _figures(server.url)
    assert after[("tailormail_events", (("type", "click"),))] == 1
    assert ("tailormail_intake_pending", ()) in after


def test_metrics_are_not_served_without_a_token(sqlite_project: Project) -> None:
    with BackgroundServer(sqlite_project.engine()) as server:
        assert httpx.get(f"{server.url}/metrics", trust_env=False).status_code == 404
