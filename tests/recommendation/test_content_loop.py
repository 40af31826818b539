"""The content loop (issue 12): a click on an item inside an email teaches the recipes.

Emails are sent by a real campaign run with links to a tracking server on loopback
(uvicorn), clicked over HTTP like a reader or a scanner would, and stored by the server's
background writer: a human click on an ``item_url`` link becomes one ``email_click``
interaction, which the next run's fit includes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from kit.project import Project
from sqlmodel import Session, col, select

from engine.app import Engine
from engine.audience.importer import import_file
from engine.feedback.events import record_events
from engine.models import InteractionRow, LedgerRow, RecipeFitRow, utcnow
from engine.reports.items import item_report
from engine.sending.real_run import run_campaign
from engine.types import EventType, TrackingEvent
from engine.web import BackgroundServer

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel link scanner)"
# Every item linked twice at its position (title and button: one link), then a page.
ITEM_TEMPLATE = """<html><body>
<ul>{% for item in items %}<li><a href="{{ item_url(item) }}">{{ item.title }}</a>
<a href="{{ item_url(item) }}">Take a look</a></li>{% endfor %}</ul>
<a href="https://example.com/about">About</a>
</body></html>
"""


def use_item_links(project: Project, recipe: str = "popularity", extra: str = "") -> None:
    """Both variants link items with ``item_url``; the campaign uses ``recipe``."""
    for key in ("a", "b"):
        (project.root / "templates" / "t" / f"{key}.html").write_text(ITEM_TEMPLATE)
    path = project.add_campaign("alerts", extra=extra)
    path.write_text(path.read_text().replace('name = "popularity"', f'name = "{recipe}"'))


@contextmanager
def served(project: Project) -> Iterator[tuple[Engine, BackgroundServer]]:
    """A tracking server on loopback and an engine whose emails link to it."""
    with BackgroundServer(project.engine()) as server:
        yield project.engine(tracking_base_url=server.url), server


def item_links(engine: Engine, recipient: str, run_id: str) -> dict[str, str]:
    """The tracked link of each item in ``recipient``'s email of ``run_id``, by item id."""
    with Session(engine.db) as session:
        row = session.exec(
            select(LedgerRow)
            .where(LedgerRow.run_id == run_id)
            .where(LedgerRow.recipient_id == recipient)
        ).one()
    message = next(m for m in engine.memory_outbox if m.send_id == row.id)  # type: ignore[attr-defined]
    hrefs = list(dict.fromkeys(re.findall(r'href="(http://[^"]+/c/[^"]+)"', message.html)))
    assert row.link_items is not None and row.items is not None
    found = {}
    for href, target in zip(hrefs, row.link_items, strict=False):
        if target is not None:
            found[target[0]] = href
    assert list(found) == row.items  # every item has its link, in the email's order
    return found


def human_click(server: BackgroundServer, link: str) -> None:
    """Follow ``link`` like a reader's browser, then wait until the click is stored."""
    with httpx.Client(follow_redirects=False, trust_env=False) as http:
        assert http.get(link, headers={"User-Agent": BROWSER}).status_code == 302
    server.drain()


def run_items(engine: Engine, run_id: str, recipient: str = "u000") -> list[str] | None:
    """The items ``recipient``'s email of ``run_id`` showed."""
    with Session(engine.db) as session:
        stmt = select(LedgerRow.items).where(LedgerRow.run_id == run_id)  # type: ignore[call-overload]
        return session.exec(stmt.where(LedgerRow.recipient_id == recipient)).one()


def email_clicks(engine: Engine) -> list[InteractionRow]:
    with Session(engine.db) as session:
        stmt = select(InteractionRow).where(InteractionRow.kind == "email_click")
        return list(session.exec(stmt.order_by(col(InteractionRow.id))).all())


def test_a_human_click_stores_one_email_click(project: Project) -> None:
    use_item_links(project)
    with served(project) as (engine, server):
        project.seed(engine, people=3)
        run_campaign(engine, "alerts", run_id="r1")
        first, second, third = item_links(engine, "u000", "r1").items()
        with httpx.Client(follow_redirects=False, trust_env=False) as http:
            for _ in range(3):  # a repeat click stores no second interaction
                answer = http.get(first[1], headers={"User-Agent": BROWSER})
                assert answer.status_code == 302
                assert answer.headers["location"] == f"https://shop.example.com/i/{first[0][1:]}"
            assert http.get(second[1], headers={"User-Agent": SCANNER}).status_code == 302
            assert http.head(third[1], headers={"User-Agent": BROWSER}).status_code == 302
        server.drain()
        clicks = email_clicks(engine)
    with Session(engine.db) as session:
        row = session.exec(select(LedgerRow).where(LedgerRow.recipient_id == "u000")).one()
    assert [(c.user_id, c.item_id, c.send_id, c.value) for c in clicks] == [
        ("u000", first[0], row.id, 1.0)
    ]


def test_the_same_url_at_two_positions_is_two_links(sqlite_project: Project) -> None:
    use_item_links(sqlite_project)
    engine = sqlite_project.engine(tracking_base_url="https://t.example")
    sqlite_project.seed(engine, people=1)
    items = sqlite_project.root / "items.csv"
    items.write_text(
        "id,title,url\n"
        + "".join(f"i{n},Item {n},https://shop.example.com/same\n" for n in range(3))
    )
    import_file(engine.db, "items", items)
    run_campaign(engine, "alerts", run_id="r1")
    with Session(engine.db) as session:
        row = session.exec(select(LedgerRow)).one()
    assert row.links == ["https://shop.example.com/same"] * 3 + ["https://example.com/about"]
    assert row.link_items == [[item, n] for n, item in enumerate(row.items or [])] + [None]


def test_the_next_fit_includes_a_click_popularity(sqlite_project: Project) -> None:
    use_item_links(sqlite_project)
    with served(sqlite_project) as (engine, server):
        sqlite_project.seed(engine, people=2)
        run_campaign(engine, "alerts", run_id="r1")
        # No interactions yet: every email shows the first items by id.
        links = item_links(engine, "u001", "r1")
        assert list(links) == ["i0", "i1", "i2"]
        human_click(server, links["i2"])
        run_campaign(engine, "alerts", run_id="r2")
        # The clicked item is now the most popular; the clicker has it already.
        assert run_items(engine, "r2") == ["i2", "i0", "i1"]
        assert "i2" not in (run_items(engine, "r2", "u001") or [])
    with Session(engine.db) as session:
        fits = session.exec(select(RecipeFitRow)).all()
    assert len(fits) == 2  # the click changed the data: the second run fitted anew


def test_the_next_fit_includes_a_click_sims(sqlite_project: Project) -> None:
    use_item_links(sqlite_project, recipe="sims")
    history = sqlite_project.root / "history.csv"
    pairs = [("o1", "i3"), ("o1", "i5"), ("o2", "i3"), ("o2", "i5")]
    pairs += [(f"o{n}", item) for n in (3, 4, 5) for item in ("i1", "i2")]
    history.write_text(
        "user_id,item_id,timestamp\n"
        + "".join(
            f"{user},{item},2025-01-0{n % 9 + 1}T10:00:00\n" for n, (user, item) in enumerate(pairs)
        )
    )
    with served(sqlite_project) as (engine, server):
        sqlite_project.seed(engine, people=1)
        import_file(engine.db, "interactions", history)
        run_campaign(engine, "alerts", run_id="r1")
        links = item_links(engine, "u000", "r1")
        assert list(links) == ["i1", "i2", "i3"]  # no history: the most popular
        human_click(server, links["i3"])
        run_campaign(engine, "alerts", run_id="r2")
        # i3's neighbour (taken by the same people) leads; i3 itself was clicked already.
        assert run_items(engine, "r2") == ["i5", "i1", "i2"]


def test_email_click_weight_zero_keeps_clicks_out_of_the_fit(sqlite_project: Project) -> None:
    use_item_links(sqlite_project, extra="email_click_weight = 0")
    with served(sqlite_project) as (engine, server):
        sqlite_project.seed(engine, people=2)
        run_campaign(engine, "alerts", run_id="r1")
        links = item_links(engine, "u001", "r1")
        human_click(server, links["i2"])
        assert len(email_clicks(engine)) == 1  # stored all the same
        run_campaign(engine, "alerts", run_id="r2")
        assert run_items(engine, "r2") == ["i0", "i1", "i2"]


@pytest.mark.parametrize("weight", ["-1", '"a lot"'])
def test_a_bad_email_click_weight_is_a_config_error(sqlite_project: Project, weight: str) -> None:
    from engine.errors import ConfigError

    sqlite_project.add_campaign("alerts", extra=f"email_click_weight = {weight}")
    with pytest.raises(ConfigError, match="email_click_weight"):
        sqlite_project.engine()


def test_filters_can_exclude_only_items_clicked_in_an_email(sqlite_project: Project) -> None:
    extra = '[filters]\nexclude_interacted = ["email_click"]\n'
    use_item_links(sqlite_project, extra=extra)
    history = sqlite_project.root / "history.csv"
    history.write_text("user_id,item_id,timestamp,kind\nu000,i0,2025-01-01T10:00:00,view\n")
    with served(sqlite_project) as (engine, server):
        sqlite_project.seed(engine, people=1)
        import_file(engine.db, "interactions", history)
        run_campaign(engine, "alerts", run_id="r1")
        links = item_links(engine, "u000", "r1")
        assert list(links) == ["i0", "i1", "i2"]  # viewed, not clicked: still shown
        human_click(server, links["i1"])
        run_campaign(engine, "alerts", run_id="r2")
        # i1 ties i0 on popularity now, but it was clicked in an email.
        assert run_items(engine, "r2") == ["i0", "i2", "i3"]


def _click(send_id: int, link_index: int, *, bot: bool = False) -> tuple[TrackingEvent, str]:
    event = TrackingEvent(
        EventType.CLICK,
        send_id,
        utcnow(),
        user_agent=SCANNER if bot else BROWSER,
        bot=bot,
        data={"link_index": link_index},
    )
    return event, f"test:{send_id}:{link_index}:{bot}:{uuid.uuid4()}"


def test_report_items_shows_clicks_per_item_and_position(sqlite_project: Project) -> None:
    use_item_links(sqlite_project)
    (sqlite_project.root / "config" / "tailormail.toml").write_text(
        f'database_url = "{sqlite_project.db_url}"\n'
    )
    engine = sqlite_project.engine(tracking_base_url="https://t.example")
    sqlite_project.seed(engine, people=20)
    run_campaign(engine, "alerts", run_id="r1")
    with Session(engine.db) as session:
        sends = session.exec(select(LedgerRow).order_by(col(LedgerRow.id))).all()
    assert all(row.items == ["i0", "i1", "i2"] for row in sends)  # no interactions: by id
    ids = [row.id or 0 for row in sends]
    # Links: i0 (0), i1 (1), i2 (2), About (3). Five emails click i0, two click i2 (one
    # of them twice); a scanner's click and a click on the About page are no item clicks.
    clicks = [_click(send, 0) for send in ids[:5]] + [_click(ids[5], 2), _click(ids[6], 2)]
    clicks += [_click(ids[6], 2), _click(ids[7], 1, bot=True), _click(ids[8], 3)]
    record_events(engine, clicks)
    report = item_report(engine, "alerts")
    assert report.sends == 20
    rates = {rate.key: (rate.shown, rate.clicks) for rate in report.items}
    assert rates == {"i0": (20, 5), "i1": (20, 0), "i2": (20, 2)}
    assert [(r.key, r.shown, r.clicks) for r in report.positions] == [
        ("1", 20, 5),
        ("2", 20, 0),
        ("3", 20, 2),
    ]
    low, high = report.positions[0].interval
    assert report.positions[0].ctr == 0.25 and 0.1 < low < 0.25 < high < 0.5
    assert len(email_clicks(engine)) == 7  # one per send and item, the repeat stored once

    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    env |= {"COLUMNS": "200", "TAILORMAIL_SECRET": "test-secret-0123456789-0123456789-01"}
    command = [sys.executable, "-m", "engine", "report", "alerts", "--items"]
    done = subprocess.run(command, cwd=sqlite_project.root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "clicks per item (20 emails)" in done.stdout
    assert re.search(r"i0\s.*\s20\s.*\s5\s.*25\.0%", done.stdout)
    assert re.search(r"\b3\s.*\s20\s.*\s2\s.*10\.0%", done.stdout)
    wrong = subprocess.run(
        [*command[:4], "nope", "--items"],
        cwd=sqlite_project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0 and "nope" in wrong.stderr + wrong.stdout
    assert "Traceback" not in wrong.stderr
