"""The tracking web app over real HTTP: uvicorn on loopback, httpx, a real Engine and database.

Click redirects go only to the URL stored in the ledger; anything forged is a 404 that
records nothing; scanners are flagged; unsubscribing needs a POST and suppresses at once;
provider webhooks are verified before parsing and deduplicated by provider event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from kit.ledger import LINKS, add_send
from sqlalchemy import create_engine, select

from engine import hookimpl
from engine.app import Engine
from engine.db import session_scope
from engine.feedback.events import events_for, record_event
from engine.feedback.webhooks import WebhookHandler, WebhookVerificationError
from engine.models import (
    CampaignSuppressionRow,
    EventRow,
    ItemRow,
    LedgerRow,
    LedgerStatus,
    RecipientRow,
    SuppressionRow,
)
from engine.sending.real_run import run_campaign
from engine.settings import load_settings
from engine.tokens import LegacyTokens, Tokens
from engine.types import EventType, TrackingEvent
from engine.web import PIXEL, BackgroundServer

SECRET = "test-secret-0123456789-0123456789-01"
WEBHOOK_KEY = b"webhook-test-key"
HUMAN_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
SCANNER_UA = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"
APPLE_PRIVACY_UA = "Mozilla/5.0"

CAMPAIGN = """
name = "alerts"
items_per_email = 2

[recipe]
name = "popularity"

[policy]
name = "uniform"

[[variants]]
key = "a"
subject = "Your picks"
template = "t/a.html"
"""
TEMPLATE = """<html><body><ul>
{% for item in items %}<li><a href="{{ track_url(item.url) }}">{{ item.title }}</a></li>{% endfor %}
</ul><a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>
"""


def sign(body: bytes) -> str:
    return hmac.new(WEBHOOK_KEY, body, hashlib.sha256).hexdigest()


class SignedJsonHandler(WebhookHandler):
    """A provider adapter like the real ones: HMAC over the body, then a JSON event list."""

    provider = "testmail"

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if not hmac.compare_digest(headers.get("x-test-signature", ""), sign(body)):
            raise WebhookVerificationError("bad signature")

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        return [
            TrackingEvent(
                type=EventType(item["event"]),
                send_id=item.get("send_id"),
                timestamp=datetime.fromtimestamp(item["ts"], UTC),
                provider_event_id=item["id"],
                provider_message_id=item.get("message_id"),
                data=item.get("data", {}),
            )
            for item in json.loads(body)["events"]
        ]


class WebhookPlugin:
    """Registers the test provider and observes every stored event."""

    def __init__(self) -> None:
        self.seen: list[TrackingEvent] = []
        self.fail = False

    @hookimpl
    def register_webhook_handlers(self, register: Callable[[str, Any], None]) -> None:
        register("testmail", SignedJsonHandler())

    @hookimpl
    def tracking_event(self, engine: Engine, event: TrackingEvent) -> None:
        self.seen.append(event)
        if self.fail:
            raise RuntimeError("a broken observer")


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture
def observer() -> WebhookPlugin:
    return WebhookPlugin()


@pytest.fixture
def engine(tmp_path: Path, db_url: str, observer: WebhookPlugin) -> Iterator[Engine]:
    project = tmp_path / "project"
    (project / "config" / "campaigns").mkdir(parents=True)
    (project / "config" / "campaigns" / "alerts.toml").write_text(CAMPAIGN)
    (project / "templates" / "t").mkdir(parents=True)
    (project / "templates" / "t" / "a.html").write_text(TEMPLATE)
    settings = load_settings(
        project_dir=project,
        environ={"TAILORMAIL_SECRET": SECRET},
        overrides={"database_url": db_url, "delivery": {"backend": "memory"}},
    )
    with Engine(settings=settings, plugins=[observer], load_entry_points=False) as built:
        yield built


@pytest.fixture
def server(engine: Engine) -> Iterator[BackgroundServer]:
    with BackgroundServer(engine) as running:
        yield running


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    # httpx's own user agent is a script's, which the tracker rightly flags as a bot.
    # The intake stores events just behind the answer: after each response, wait for it,
    # so every assertion sees the database as the request left it.
    with httpx.Client(
        base_url=server.url,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": HUMAN_UA},
        timeout=10,
        event_hooks={"response": [lambda _: server.drain()]},
    ) as http:
        yield http


# -- helpers ----------------------------------------------------------------------------
def stored_events(engine: Engine) -> list[EventRow]:
    with session_scope(engine.db) as session:
        return list(session.scalars(select(EventRow).order_by(EventRow.id)).all())


def suppressions(engine: Engine) -> list[SuppressionRow]:
    with session_scope(engine.db) as session:
        return list(session.scalars(select(SuppressionRow)).all())


def flip_one_char(token: str) -> str:
    middle = len(token) // 2
    swapped = "B" if token[middle] == "A" else "A"
    return token[:middle] + swapped + token[middle + 1 :]


# -- clicks -----------------------------------------------------------------------------
def test_click_redirects_to_exactly_the_target_in_the_token(
    engine: Engine, client: httpx.Client
) -> None:
    send_id = add_send(engine, links=[])  # the ledger is not asked
    for index, url in enumerate(LINKS):
        response = client.get(f"/c/{engine.tokens.click(send_id, index, url)}")
        assert response.status_code == 302
        assert response.headers["location"] == url
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
    events = stored_events(engine)
    assert [(e.type, e.send_id, e.url, e.bot) for e in events] == [
        ("click", send_id, LINKS[0], False),
        ("click", send_id, LINKS[1], False),
    ]
    assert events[0].user_agent == HUMAN_UA


def test_links_sent_before_version_2_tokens_still_redirect_from_the_ledger(
    engine: Engine, client: httpx.Client
) -> None:
    send_id = add_send(engine)
    old = LegacyTokens(SECRET.encode())  # what earlier releases put in emails
    for index, url in enumerate(LINKS):
        response = client.get(f"/c/{old.click(send_id, index)}")
        assert response.status_code == 302
        assert response.headers["location"] == url
    assert client.get(f"/o/{old.open(send_id)}").status_code == 200
    assert [(e.type, e.url) for e in stored_events(engine)] == [
        ("click", LINKS[0]),
        ("click", LINKS[1]),
        ("open", None),
    ]


def test_a_failing_observer_does_not_break_the_link(
    engine: Engine, client: httpx.Client, observer: WebhookPlugin
) -> None:
    observer.fail = True
    send_id = add_send(engine)
    response = client.get(f"/c/{engine.tokens.click(send_id, 0, LINKS[0])}")
    assert response.status_code == 302
    assert response.headers["location"] == LINKS[0]
    assert [e.type for e in stored_events(engine)] == ["click"]
    assert len(observer.seen) == 1


def test_a_non_ascii_link_is_percent_encoded_only_in_the_location(
    engine: Engine, client: httpx.Client
) -> None:
    stored = "https://example.com/café?q=ü ok&x=1"
    send_id = add_send(engine, links=[stored])
    response = client.get(f"/c/{engine.tokens.click(send_id, 0, stored)}")
    assert response.status_code == 302
    assert response.headers["location"] == "https://example.com/caf%C3%A9?q=%C3%BC%20ok&x=1"
    assert [e.url for e in stored_events(engine)] == [stored]


def test_forged_or_misused_tokens_are_404_and_record_nothing(
    engine: Engine, client: httpx.Client
) -> None:
    send_id = add_send(engine)
    tokens = engine.tokens
    old = LegacyTokens(SECRET.encode())
    click = tokens.click(send_id, 0, LINKS[0])
    other = Tokens(b"another-secret")
    cases = {
        "one character flipped": ("GET", f"/c/{flip_one_char(click)}"),
        "sealed with another secret": ("GET", f"/c/{other.click(send_id, 0, LINKS[0])}"),
        "old token, another secret": ("GET", f"/c/{LegacyTokens(b'x').click(send_id, 0)}"),
        "old token flipped": ("GET", f"/c/{flip_one_char(old.click(send_id, 0))}"),
        "random string": ("GET", "/c/not-a-token-at-all"),
        "a target that is not http(s)": ("GET", f"/c/{tokens.click(send_id, 0, 'javascript:x')}"),
        "unsubscribe token as a click": ("GET", f"/c/{tokens.unsubscribe(send_id)}"),
        "old token, link index out of range": ("GET", f"/c/{old.click(send_id, len(LINKS))}"),
        "old token, send not in the ledger": ("GET", f"/c/{old.click(send_id + 1000, 0)}"),
        "click token at the unsubscribe page": ("GET", f"/u/{click}"),
        "click token posted to unsubscribe": ("POST", f"/u/{click}"),
        "forged unsubscribe": ("POST", f"/u/{flip_one_char(tokens.unsubscribe(send_id))}"),
    }
    for name, (method, path) in cases.items():
        response = client.request(method, path, content=b"List-Unsubscribe=One-Click")
        assert response.status_code == 404, name
        assert "location" not in response.headers, name
    assert stored_events(engine) == []
    assert suppressions(engine) == []


def test_head_requests_and_scanners_are_flagged_but_still_redirected(
    engine: Engine, client: httpx.Client
) -> None:
    send_id = add_send(engine)
    path = f"/c/{engine.tokens.click(send_id, 1, LINKS[1])}"
    head = client.head(path)
    scanner = client.get(path, headers={"user-agent": SCANNER_UA})
    person = client.get(path)
    for response in (head, scanner, person):
        assert response.status_code == 302
        assert response.headers["location"] == LINKS[1]
    # The scanner's second probe is a repeat within the dedupe window: counted, not stored;
    # the person's click after it is not one (the key holds the bot flag).
    assert [e.bot for e in stored_events(engine)] == [True, False]


# -- opens ------------------------------------------------------------------------------
def test_open_pixel_records_genuine_opens_only(engine: Engine, client: httpx.Client) -> None:
    send_id = add_send(engine)
    path = f"/o/{engine.tokens.open(send_id)}"
    reader = client.get(path)
    proxy = client.get(path, headers={"user-agent": APPLE_PRIVACY_UA})
    forged = client.get(f"/o/{flip_one_char(engine.tokens.open(send_id))}")
    for response in (reader, proxy, forged):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["cache-control"] == "no-store"
        assert response.content == PIXEL  # identical for forged tokens: no oracle
    assert PIXEL.startswith(b"GIF89a")
    events = stored_events(engine)
    assert [(e.type, e.send_id, e.machine) for e in events] == [
        ("open", send_id, False),
        ("open", send_id, True),
    ]


# -- unsubscribes -----------------------------------------------------------------------
def test_unsubscribe_page_asks_first_and_does_not_suppress(
    engine: Engine, client: httpx.Client
) -> None:
    send_id = add_send(engine)
    response = client.get(f"/u/{engine.tokens.unsubscribe(send_id)}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert re.search(r'<form method="post"', response.text)
    assert suppressions(engine) == []
    assert stored_events(engine) == []


def test_one_click_unsubscribe_suppresses_at_once_and_is_idempotent(
    engine: Engine, client: httpx.Client, observer: WebhookPlugin
) -> None:
    send_id = add_send(engine, email="Ann@Example.com")
    path = f"/u/{engine.tokens.unsubscribe(send_id)}"
    form = {"content-type": "application/x-www-form-urlencoded"}
    first = client.post(path, content=b"List-Unsubscribe=One-Click", headers=form)
    assert first.status_code == 200
    assert "location" not in first.headers
    assert "unsubscribed" in first.text.lower()
    [suppression] = suppressions(engine)
    assert (suppression.email, suppression.reason) == ("ann@example.com", "unsubscribe")
    assert suppression.send_id == send_id
    second = client.post(path)  # a client retrying, with no body at all
    assert second.status_code == 200
    assert len(suppressions(engine)) == 1
    assert [e.type for e in stored_events(engine)] == ["unsubscribe"]
    assert [e.type for e in observer.seen] == [EventType.UNSUBSCRIBE]


def test_one_click_does_the_configured_scope_and_the_pages_say_which(
    engine: Engine, client: httpx.Client
) -> None:
    """Issue 5 item 18: with ``unsubscribe_scope = "campaign"`` the mailbox's one-click
    button stops this campaign only, says so, and offers the wider choice; repeated, it
    changes nothing more."""
    engine.settings.web.unsubscribe_scope = "campaign"
    send_id = add_send(engine, email="kim@example.com")
    path = f"/u/{engine.tokens.unsubscribe(send_id, 'alerts')}"
    page = client.get(path).text  # both choices, nothing done
    assert 'value="campaign"' in page and 'value="all"' in page
    form = {"content-type": "application/x-www-form-urlencoded"}
    for _ in range(2):
        answer = client.post(path, content=b"List-Unsubscribe=One-Click", headers=form)
        assert answer.status_code == 200
        assert "You are unsubscribed from the" in answer.text
        assert "Our other emails may still reach you." in answer.text
        assert 'value="all"' in answer.text  # the wider choice, offered
    with session_scope(engine.db) as session:
        scoped = list(session.scalars(select(CampaignSuppressionRow)).all())
    assert [(s.email, s.campaign) for s in scoped] == [("kim@example.com", "alerts")]
    assert suppressions(engine) == []
    assert [(e.type, e.data["scope"]) for e in stored_events(engine)] == [
        ("unsubscribe", "campaign")
    ]


def test_a_campaign_run_skips_a_recipient_who_unsubscribed(
    engine: Engine, client: httpx.Client
) -> None:
    with session_scope(engine.db) as session:
        session.add(RecipientRow(id="ann", email="ann@example.com"))
        session.add(RecipientRow(id="bob", email="bob@example.com"))
        for i in range(3):
            url = f"https://shop.example.com/i/{i}?ref=mail&x=1"
            session.add(ItemRow(id=f"i{i}", attributes={"title": f"Item {i}", "url": url}))
    first = run_campaign(engine, "alerts", scheduled_for=datetime(2025, 1, 6, 9, tzinfo=UTC))
    assert first.sent == 2
    outbox = getattr(engine, "memory_outbox")  # noqa: B009
    ann = next(m for m in outbox if m.to_address == "ann@example.com")

    click_url = re.search(r'href="([^"]+/c/[A-Za-z0-9_-]+)"', ann.html)
    assert click_url is not None
    clicked = client.get(urlsplit(click_url.group(1)).path)
    assert clicked.status_code == 302
    assert clicked.headers["location"] == ann.metadata["links"][0]

    assert ann.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = ann.headers["List-Unsubscribe"].strip("<>")
    response = client.post(urlsplit(unsubscribe_url).path, content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 200

    second = run_campaign(engine, "alerts", scheduled_for=datetime(2025, 1, 13, 9, tzinfo=UTC))
    assert (second.sent, second.skipped) == (1, 1)
    with session_scope(engine.db) as session:
        row = session.scalars(
            select(LedgerRow).where(
                LedgerRow.run_id == second.run_id, LedgerRow.recipient_id == "ann"
            )
        ).one()
    assert row.status == LedgerStatus.SKIPPED
    assert row.skip_reason == "suppressed (unsubscribe)"
    assert row.variant is None and row.probability is None


# -- provider webhooks ------------------------------------------------------------------
def post_webhook(
    client: httpx.Client, events: list[dict[str, Any]], provider: str = "testmail"
) -> httpx.Response:
    body = json.dumps({"events": events}).encode()
    return client.post(
        f"/webhooks/{provider}", content=body, headers={"x-test-signature": sign(body)}
    )


def test_unknown_provider_is_404(client: httpx.Client) -> None:
    assert post_webhook(client, [], provider="nosuchmail").status_code == 404


def test_webhook_failing_verification_is_403_and_stores_nothing(
    engine: Engine, client: httpx.Client
) -> None:
    send_id = add_send(engine)
    body = json.dumps({"events": [{"event": "complaint", "id": "e1", "ts": 0, "send_id": send_id}]})
    response = client.post(
        "/webhooks/testmail", content=body, headers={"x-test-signature": sign(b"something else")}
    )
    assert response.status_code == 403
    assert stored_events(engine) == []
    assert suppressions(engine) == []


def test_unreadable_webhook_payload_is_400(engine: Engine, client: httpx.Client) -> None:
    body = b"{not json"
    response = client.post(
        "/webhooks/testmail", content=body, headers={"x-test-signature": sign(body)}
    )
    assert response.status_code == 400
    assert post_webhook(client, [{"event": "bounce"}]).status_code == 400  # no event id
    assert stored_events(engine) == []


def test_oversized_webhook_body_is_413(engine: Engine, client: httpx.Client) -> None:
    engine.settings.web.max_webhook_body_bytes = 1024
    events = [{"event": "delivered", "id": f"e{i}", "ts": 0} for i in range(40)]
    assert post_webhook(client, events).status_code == 413
    assert stored_events(engine) == []


def test_webhook_events_are_stored_once_and_matched_by_provider_message_id(
    engine: Engine, client: httpx.Client, observer: WebhookPlugin
) -> None:
    send_id = add_send(engine, email="Carol@Example.com", provider_id="<abc.1@example.com>")
    events = [
        {"event": "delivered", "id": "evt-1", "ts": 1_700_000_000, "send_id": send_id},
        # A provider that knows only its message id, spelled without the angle brackets.
        {
            "event": "complaint",
            "id": "evt-2",
            "ts": 1_700_000_060,
            "message_id": "abc.1@example.com",
        },
        {
            "event": "bounce",
            "id": "evt-3",
            "ts": 1_700_000_120,
            "send_id": send_id,
            "data": {"bounce_type": "soft"},
        },
    ]
    first = post_webhook(client, events)
    assert first.status_code == 200
    assert first.json() == {"stored": 3, "duplicates": 0}
    retry = post_webhook(client, events)
    assert retry.json() == {"stored": 0, "duplicates": 3}

    rows = stored_events(engine)
    assert [(r.type, r.send_id, r.dedupe_key) for r in rows] == [
        ("delivered", send_id, "testmail:evt-1"),
        ("complaint", send_id, "testmail:evt-2"),
        ("bounce", send_id, "testmail:evt-3"),
    ]
    assert rows[0].timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    [suppression] = suppressions(engine)  # the soft bounce suppresses nothing
    assert (suppression.email, suppression.reason) == ("carol@example.com", "complaint")
    assert [e.send_id for e in observer.seen] == [send_id] * 3  # resolved before the hook


# -- the event store ----------------------------------------------------------------------
def test_events_round_trip_for_the_reward_join(engine: Engine) -> None:
    send_id = add_send(engine, email="dan@example.com")
    later = datetime(2025, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    bounce = TrackingEvent(
        EventType.BOUNCE,
        send_id,
        later,
        provider_event_id="p-9",
        provider_message_id="<m@x>",
        data={"bounce_type": "hard"},
    )
    click = TrackingEvent(EventType.CLICK, send_id, later - timedelta(hours=1), url=LINKS[0])
    assert record_event(engine, bounce, dedupe_key="testmail:p-9") is True
    assert record_event(engine, bounce, dedupe_key="testmail:p-9") is False
    assert record_event(engine, click) is True
    found = events_for(engine.db, [send_id, send_id + 1])
    assert found[send_id + 1] == []
    assert [e.type for e in found[send_id]] == [EventType.CLICK, EventType.BOUNCE]  # oldest first
    rebuilt = found[send_id][1]
    assert rebuilt.provider_event_id == "p-9" and rebuilt.provider_message_id == "<m@x>"
    assert rebuilt.data == {"bounce_type": "hard"}
    assert rebuilt.timestamp == later
    assert rebuilt.timestamp.tzinfo is not None and rebuilt.timestamp.utcoffset() == timedelta(0)
    assert [s.reason for s in suppressions(engine)] == ["hard_bounce"]


# -- health -----------------------------------------------------------------------------
def test_health_reports_the_database(engine: Engine, client: httpx.Client, tmp_path: Path) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    intake = {"pending": 0, "repeats": {}}
    assert response.json() == {"status": "ok", "database": "ok", "intake": intake}
    working = engine.db
    engine.db = create_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")  # cannot be opened
    try:
        assert client.get("/health").status_code == 503
    finally:
        engine.db.dispose()
        engine.db = working
    assert client.get("/health").status_code == 200
