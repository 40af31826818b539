"""A tracked link redirects to the link the email was rendered with, whatever is appended
to it: no query parameter can bend the redirect (no open redirect)."""

from __future__ import annotations

import re

import httpx
from kit.project import Project
from sqlmodel import Session

from engine.models import LedgerRow
from engine.sending.real_run import run_campaign

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
ELSEWHERE = "https://evil.example/phish"
# Names open redirects are commonly built on, plus a repeated one.
BENDING = [
    {"url": ELSEWHERE},
    {"target": ELSEWHERE, "redirect": ELSEWHERE, "next": ELSEWHERE},
    {"to": ELSEWHERE, "dest": ELSEWHERE, "link": ELSEWHERE, "u": ELSEWHERE, "r": ELSEWHERE},
    {"url": [ELSEWHERE, "//evil.example"]},
]


def test_no_query_parameter_changes_a_redirect(sqlite_project: Project) -> None:
    with sqlite_project.sent_through_a_server(people=2) as (engine, base_url):
        message = engine.memory_outbox[0]  # type: ignore[attr-defined]
        links = re.findall(rf'href="({re.escape(base_url)}/c/[^"]+)"', message.html)
        with Session(engine.db) as session:
            row = session.get(LedgerRow, message.send_id)
        assert row is not None and row.items
        # The template links every item (conftest's items.csv URLs), then the About page.
        rendered = [f"https://shop.example.com/i/{item[1:]}" for item in row.items]
        rendered.append("https://example.com/about?a=1&b=2")
        assert len(links) == len(rendered)
        with httpx.Client(headers={"User-Agent": BROWSER}, follow_redirects=False) as http:
            for link, target in zip(links, rendered, strict=True):
                plain = http.get(link)
                assert (plain.status_code, plain.headers["location"]) == (302, target)
                for params in BENDING:
                    bent = http.get(link, params=params)
                    assert (bent.status_code, bent.headers["location"]) == (302, target), params
                    assert "evil" not in bent.text


def test_emails_carry_no_readable_redirect_target(sqlite_project: Project) -> None:
    engine = sqlite_project.engine(tracking_base_url="https://t.example")
    sqlite_project.seed(engine, people=1)
    run_campaign(engine, "alerts", run_id="r1")
    html = engine.memory_outbox[0].html
    links = re.findall(r'href="(https://t\.example/c/[^"]+)"', html)
    assert links
    # The tracked link has no query string a reader (or an attacker) could edit.
    assert all("?" not in link and "shop.example.com" not in link for link in links)
