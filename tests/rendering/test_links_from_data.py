"""Issue 17, done-when 2: data never mints a redirect.

Hostile recipients and items (URLs in names and titles, ``javascript:``, URL-encoded,
fullwidth and IDN look-alikes, an ``href`` from a recipient attribute, a value appended
to a URL the author wrote) go through the real importer and a real campaign run on the
``outbox`` backend. Every tracked link in every part of every message is then followed on
a real tracking server: each one redirects to a URL the campaign author wrote, and the
hostile text is still there, escaped in the HTML part, as it is in the text part.
"""

from __future__ import annotations

import email
import json
import re
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import httpx
from kit.project import Project
from markupsafe import escape
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session, select

from engine.audience.importer import import_file
from engine.models import LedgerRow
from engine.sending.real_run import run_campaign
from engine.web import BackgroundServer

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
HOSTILE = [
    "https://evil.example/phish?x=1",
    "hTTpS://EVIL.example/Mixed-Case",
    "http://evil.example/plain",
    "javascript:alert(document.domain)//https://evil.example/js",
    "https%3A%2F%2Fevil.example%2Fencoded",
    "https:%2F%2Fevil.example/half-encoded",
    "//evil.example/protocol-relative",
    "ｈｔｔｐｓ://ｅｖｉｌ.example/fullwidth",
    "https://еvil.example/cyrillic-e",
    "https://xn--vil-8cd.example/idn",
    "https://shop.example.com.evil.example/look-alike",
    '<a href="https://evil.example/tag">click</a>',
    "https://item-link.tailormail.invalid/0",  # what placeholders looked like before
]
# Appended to "https://shop.example.com" by the template: each one would change the host.
TAILS = [".evil.example/", "@evil.example/", ":443@evil.example/", ".evil.example?x=1"]
ABOUT = "https://example.com/about?a=1&b=2"
HELP = "https://example.com/help"

HTML = """<html><body>
<p>Hi {{ recipient.first_name }}</p>
<p>Your site: <a href="{{ recipient.website }}">{{ recipient.website }}</a>,
your corner: <a href="https://shop.example.com{{ recipient.tail }}">corner</a></p>
<ul>{% for item in items %}<li><a href="{{ item_url(item) }}">{{ item.title }}</a>
{{ item.note }}</li>{% endfor %}</ul>
<a href="https://example.com/about?a=1&amp;b=2">About</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a>
</body></html>
"""
TEXT = """Hi {{ recipient.first_name }} ({{ recipient.website }})
{% for item in items %}- {{ item.title }} {{ item.note }}: {{ item_url(item) }}
{% endfor %}
Help: https://example.com/help.
"""


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def hostile_project(project: Project) -> None:
    """Variant a has a text template, variant b's text part is made from its HTML."""
    templates = project.root / "templates" / "t"
    (templates / "a.html").write_text(HTML, encoding="utf-8")
    (templates / "a.txt").write_text(TEXT, encoding="utf-8")
    (templates / "b.html").write_text(HTML, encoding="utf-8")


def import_hostile_data(project: Project, db: SAEngine) -> dict[str, str]:
    """Import hostile recipients and items; return the catalogue's URLs by item id."""
    people = [
        {
            "id": f"u{n:02d}",
            "email": f"user{n}@example.com",
            "first_name": value,
            "website": HOSTILE[(n + 1) % len(HOSTILE)],
            "tail": TAILS[n % len(TAILS)],
        }
        for n, value in enumerate(HOSTILE)
    ]
    items = [
        {
            "id": f"i{n}",
            "title": f"Item {n} {value}",
            "note": HOSTILE[(n + 3) % len(HOSTILE)],
            "url": f"https://shop.example.com/i/{n}",
        }
        for n, value in enumerate(HOSTILE)
    ]
    import_file(db, "recipients", write_jsonl(project.root / "people.jsonl", people))
    import_file(db, "items", write_jsonl(project.root / "items.jsonl", items))
    return {item["id"]: item["url"] for item in items}


def text_parts(message: EmailMessage) -> dict[str, str]:
    parts = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts[part.get_content_type()] = part.get_content()
    return parts


def test_no_tracked_link_redirects_where_the_author_did_not_write(
    sqlite_project: Project,
) -> None:
    hostile_project(sqlite_project)
    with BackgroundServer(sqlite_project.engine()) as server:
        engine = sqlite_project.engine("outbox", tracking_base_url=server.url)
        catalogue = import_hostile_data(sqlite_project, engine.db)
        written = {ABOUT, HELP, *catalogue.values()}
        summary = run_campaign(engine, "alerts", run_id="r1")
        assert summary.sent == len(HOSTILE)
        with Session(engine.db) as session:
            rows = {row.send_ref: row for row in session.exec(select(LedgerRow))}
        people = {f"user{n}@example.com": value for n, value in enumerate(HOSTILE)}
        website = {address: HOSTILE[(n + 1) % len(HOSTILE)] for n, address in enumerate(people)}
        tracked = re.compile(re.escape(server.url) + r"/c/[A-Za-z0-9_-]+")
        followed, variants = 0, set()
        with httpx.Client(headers={"User-Agent": BROWSER}, follow_redirects=False) as http:
            for path in sorted((sqlite_project.root / "outbox").glob("*.eml")):
                message = email.message_from_bytes(path.read_bytes(), policy=default)
                assert isinstance(message, EmailMessage)
                row = rows[str(message["X-Tailormail-Send-Id"])]  # the keyed send reference
                variants.add(row.variant)
                parts = text_parts(message)
                assert set(parts) == {"text/plain", "text/html"}
                for kind, body in parts.items():
                    links = tracked.findall(body)
                    assert len(links) >= 4, (path.name, kind)  # 3 items, the about/help page
                    for link in links:
                        answer = http.get(link)
                        assert answer.status_code == 302, (path.name, kind, link)
                        assert answer.headers["location"] in written, (path.name, kind)
                        followed += 1
                # The hostile values are still there, as text.
                html, text = parts["text/html"], parts["text/plain"]
                name = people[str(message["To"])]
                titles = [f"Item {i[1:]} {HOSTILE[int(i[1:])]}" for i in row.items or []]
                for value in (name, *titles):
                    assert str(escape(value)) in html, (path.name, value)
                    assert value in text, (path.name, value)
                assert f'href="{escape(website[str(message["To"])])}"' in html  # untracked
                assert '<a href="https://evil.example/tag">' not in html  # never markup
                assert "tailormail.invalid/" not in html.replace(HOSTILE[-1], "")
    assert variants == {"a", "b"}  # a text template, and a text part made from the HTML
    assert followed >= 8 * len(HOSTILE)
