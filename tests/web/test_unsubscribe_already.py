"""Issue 18: the unsubscribe page tells someone unsubscribed already so, and never waits on
the database for it: down or hanging, the page offers the usual choice within its bound.

The tracking server runs for real (uvicorn on loopback); the hanging database is a
loopback socket that accepts connections and never answers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from kit.ledger import add_send
from kit.project import Project
from sqlalchemy import create_engine

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.feedback.events import record_events
from engine.models import utcnow
from engine.web import BackgroundServer
from engine.web.unsubscribed import LOOKUP_SECONDS

ASKS = "Which emails should stop?"


def get_page(server: BackgroundServer, engine: Engine, send_id: int) -> tuple[str, float]:
    """The unsubscribe page for ``send_id`` from the live server, and how long it took."""
    with httpx.Client(trust_env=False, timeout=30) as http:
        began = time.monotonic()
        response = http.get(f"{server.url}/u/{engine.tokens.unsubscribe(send_id, 'alerts')}")
        took = time.monotonic() - began
    assert response.status_code == 200
    return response.text, took


def page(engine: Engine, send_id: int) -> str:
    with BackgroundServer(engine) as server:
        return get_page(server, engine, send_id)[0]


def unsubscribe(engine: Engine, send_id: int, scope: str) -> None:
    """Store the unsubscribe as the tracking server's writer does (the intake's batch)."""
    event = TrackingEvent(EventType.UNSUBSCRIBE, send_id, utcnow(), data={"scope": scope})
    assert record_events(engine, [(event, f"unsub:{send_id}:{scope}")]) == 1


def test_the_page_says_what_already_stopped(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lookup's 0.5 s courtesy bound is the other test's subject; here a loaded machine's
    # slow first query must not turn the page into the ordinary choice.
    monkeypatch.setattr("engine.web.unsubscribed.LOOKUP_SECONDS", 30.0)
    with project.engine() as engine:
        everything, one_campaign, neither = (add_send(engine, f"p{i}@example.com") for i in "abc")
        unsubscribe(engine, everything, "all")
        unsubscribe(engine, one_campaign, "campaign")
        shown = page(engine, everything)
        assert "You are already unsubscribed from all our emails." in shown
        assert "<form" not in shown and ASKS not in shown
        shown = page(engine, one_campaign)
        assert "You are already unsubscribed from the “Test alerts” emails." in shown
        assert 'value="all"' in shown and 'value="campaign"' not in shown
        shown = page(engine, neither)
        assert ASKS in shown and 'value="campaign"' in shown


@contextmanager
def silent_database() -> Iterator[str]:
    """A PostgreSQL URL whose server accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    try:
        yield f"postgresql+psycopg2://u@127.0.0.1:{port}/db"
    finally:
        while True:  # answer every waiting connection with EOF, so its thread ends
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                break
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.mark.parametrize("database", ["refusing", "hanging"])
def test_with_the_database_down_the_page_offers_the_choice_in_time(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    refusing = f"postgresql+psycopg2://u@127.0.0.1:{closed.getsockname()[1]}/db"
    closed.close()
    with sqlite_project.engine() as engine, BackgroundServer(engine) as server:
        send_id = add_send(engine)
        unsubscribe(engine, send_id, "all")
        with silent_database() as hanging:  # ends its connections before the server stops
            down = create_engine(refusing if database == "refusing" else hanging)
            monkeypatch.setattr(engine, "db", down)
            shown, took = get_page(server, engine, send_id)
        assert ASKS in shown  # the usual page: the choice is kept in the intake log
        assert took < LOOKUP_SECONDS + 5  # bounded: without the bound it never answers
