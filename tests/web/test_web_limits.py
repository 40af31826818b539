"""What one client can take from the tracking server is bounded (issue 17, docs/security.md).

Real uvicorn on loopback (``BackgroundServer``), raw sockets where the point is what a
client sends (nothing, half a head, half a body), httpx elsewhere. Clients other than
127.0.0.1 connect from other loopback addresses (127.0.0.2...). Deadlines are set to
about a second here; each wait is generous, so only a hang fails.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from select import select as readable_within
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from engine.app import Engine
from engine.db import session_scope
from engine.models import EventRow, LedgerRow, LedgerStatus, utcnow
from engine.settings import load_settings
from engine.web import BackgroundServer

SECRET = "limits-secret-0123456789-0123456789"
HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
HANG = 10.0  # seconds: any wait longer than this is a hang, not slowness

Serve = Callable[..., tuple[Engine, BackgroundServer]]


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """Start a tracking server whose ``[web]`` settings are ``web``; stopped at the end.

    Its ``standard`` webhook is configured (a body is read only for a configured one).
    """
    stack = ExitStack()
    monkeypatch.setenv(
        "TEST_LIMITS_WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"k" * 24).decode()
    )

    def start(**web: Any) -> tuple[Engine, BackgroundServer]:
        project = tmp_path / f"p{len(stack._exit_callbacks)}"
        project.mkdir()
        settings = load_settings(
            project_dir=project,
            environ={"TAILORMAIL_SECRET": SECRET},
            overrides={
                "database_url": f"sqlite:///{project}/t.db",
                "delivery": {"backend": "memory"},
                "web": web,
                "plugins": {"webhooks": {"standard": {"secret_env": "TEST_LIMITS_WEBHOOK_SECRET"}}},
            },
        )
        engine = stack.enter_context(Engine(settings=settings, load_entry_points=False))
        server = stack.enter_context(BackgroundServer(engine, log_level="info"))
        return engine, server

    with stack:
        yield start


def add_send(engine: Engine) -> int:
    with session_scope(engine.db) as session:
        row = LedgerRow(
            run_id="r1",
            campaign="alerts",
            recipient_id=uuid.uuid4().hex,
            email="ann@example.com",
            decision_id=uuid.uuid4().hex,
            status=LedgerStatus.SENT,
            variant="a",
            probability=1.0,
            links=[],
            sent_at=utcnow(),
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


def events(engine: Engine) -> list[EventRow]:
    with session_scope(engine.db) as session:
        return list(session.scalars(select(EventRow).order_by(EventRow.id)))


def connect(server: BackgroundServer, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(HANG)
    sock.connect((server.host, server.port))
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (b"" if it closed without a word)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock``; fails when it is still open after that."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server still holds the connection after {seconds} s")
    return time.monotonic() - start


def head(path: str, length: int | None = None, host: str = "tracking.example") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client(server: BackgroundServer, agent: str = HUMAN_UA, **kwargs: Any) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        trust_env=False,
        follow_redirects=False,
        timeout=HANG,
        headers={"user-agent": agent},
        **kwargs,
    )


# -- connections ---------------------------------------------------------------------------
def test_a_connection_that_sends_nothing_or_its_head_slowly_is_closed(serve: Serve) -> None:
    _, server = serve(header_timeout_seconds=1.0)
    silent = connect(server)
    slow = connect(server)
    slow.sendall(b"GET /health HTTP/1.1\r\n")
    assert closed_within(silent, HANG) < 3
    assert trickled_until_closed(slow) < 3
    kept = connect(server)  # a kept-alive connection gets a fresh deadline per request
    for _ in range(3):
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert one_response(kept).startswith(b"HTTP/1.1 200")
        time.sleep(0.6)
    assert closed_within(kept, HANG) < 3


def test_one_client_cannot_take_every_connection(serve: Serve) -> None:
    _, server = serve(max_connections_per_client=4, header_timeout_seconds=30.0)
    held = [connect(server, "127.0.0.2") for _ in range(4)]
    extra = connect(server, "127.0.0.2")
    assert answer_or_reset(extra) == b""  # closed at once, without a word
    other = connect(server, "127.0.0.3")
    other.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer(other).startswith(b"HTTP/1.1 200")
    for sock in [*held, extra, other]:
        sock.close()


def test_when_the_server_is_full_a_newcomer_displaces_the_heaviest_idle_client(
    serve: Serve,
) -> None:
    _, server = serve(max_connections=16, max_connections_per_client=12)
    heavy = [connect(server, "127.0.0.2") for _ in range(12)]
    light = [connect(server, "127.0.0.3") for _ in range(4)]
    time.sleep(0.3)  # all 16 admitted: the server is full
    newcomer = connect(server, "127.0.0.4")
    newcomer.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer(newcomer).startswith(b"HTTP/1.1 200")
    dropped = closed_ones(heavy + light)
    assert len(dropped) == 1 and dropped[0] in heavy
    for sock in heavy + light:
        sock.close()


def one_response(sock: socket.socket) -> bytes:
    """One whole response (head and ``Content-Length`` body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head_part, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head_part.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head_part + b"\r\n\r\n" + body


def trickled_until_closed(sock: socket.socket) -> float:
    """Send a header line every 0.2 s, never the end; seconds until the server closed."""
    started = time.monotonic()
    while time.monotonic() - started < HANG:
        try:
            sock.sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"a head sent a line at a time is still read after {HANG} s")


def answer_or_reset(sock: socket.socket) -> bytes:
    try:
        return answer(sock)
    except ConnectionResetError:
        return b""


def closed_ones(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets among ``socks`` the server has closed (waits a second for them)."""
    time.sleep(0.3)
    readable, _, _ = readable_within(socks, [], [], 1.0)
    closed = []
    for sock in readable:
        try:
            if sock.recv(1) == b"":
                closed.append(sock)
        except ConnectionResetError:
            closed.append(sock)
    return closed


# -- bodies --------------------------------------------------------------------------------
def test_a_webhook_body_announced_over_the_cap_is_refused_before_it_is_sent(
    serve: Serve,
) -> None:
    _, server = serve()
    sock = connect(server)
    sock.sendall(head("/webhooks/standard", 6 * 1024 * 1024))  # and not one body byte
    reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
    assert b"the limit is 5242880 bytes" in reply


def test_a_body_that_stalls_is_408_within_the_deadline(serve: Serve) -> None:
    _, server = serve(body_timeout_seconds=1.0)
    sock = connect(server)
    sock.sendall(head("/webhooks/standard", 100) + b'{"partial": ')
    started = time.monotonic()
    reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    assert time.monotonic() - started < 4


def test_the_bytes_all_bodies_hold_at_once_are_bounded(serve: Serve) -> None:
    _, server = serve(max_buffered_body_bytes=100_000)
    holding = connect(server)
    holding.sendall(head("/webhooks/standard", 80_000) + b"x" * 1000)
    time.sleep(0.3)
    second = connect(server)
    second.sendall(head("/webhooks/standard", 80_000))
    reply = answer(second)
    assert reply.startswith(b"HTTP/1.1 503"), reply[:80]
    assert b"retry-after: 5" in reply.lower()
    holding.close()


def test_an_aborted_upload_is_one_log_line_without_a_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    _, server = serve()
    caplog.set_level(logging.INFO)
    uvicorn_log = logging.getLogger("uvicorn")  # it does not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    try:
        before = len(caplog.records)
        sock = connect(server)
        sock.sendall(head("/webhooks/standard", 1000) + b"x" * 10)
        time.sleep(0.3)
        sock.close()
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline and len(caplog.records) == before:
            time.sleep(0.05)
        time.sleep(0.3)  # and nothing after it
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    records = caplog.records[before:]
    assert [r.getMessage() for r in records] == [
        "a client left during its upload (webhook standard, 10 of 1000 bytes)"
    ]
    assert records[0].exc_info is None


# -- opens and clicks ----------------------------------------------------------------------
def test_repeated_opens_and_clicks_are_stored_once_and_counted(serve: Serve) -> None:
    engine, server = serve()
    send_id = add_send(engine)
    huge_agent = HUMAN_UA + " x" * 5000  # 10 KB: under h11's head limit, over ours
    long_url = "https://shop.example/" + "a" * 3000
    with client(server, huge_agent) as http:
        opened = [http.get(f"/o/{engine.tokens.open(send_id)}") for _ in range(50)]
        clicked = [http.get(f"/c/{engine.tokens.click(send_id, 0, long_url)}") for _ in range(5)]
        health = http.get("/health").json()
    assert {r.status_code for r in opened} == {200}
    assert {r.headers["location"] for r in clicked} == {long_url}  # the link is whole
    server.drain()
    stored = events(engine)
    assert [e.type for e in stored] == ["open", "click"]
    assert {len(e.user_agent or "") for e in stored} == {512}
    assert stored[1].url == long_url[:2048]
    assert health["intake"]["repeats"] == {"open": 49, "click": 4}


def test_a_repeat_after_the_window_is_stored_again(serve: Serve) -> None:
    engine, server = serve(dedupe_window_seconds=0.5)
    send_id = add_send(engine)
    with client(server) as http:
        http.get(f"/o/{engine.tokens.open(send_id)}")
        time.sleep(0.7)
        http.get(f"/o/{engine.tokens.open(send_id)}")
    server.drain()
    assert [e.type for e in events(engine)] == ["open", "open"]


# -- the rate limit ------------------------------------------------------------------------
def test_over_its_rate_a_client_gets_429_but_its_clicks_still_redirect(serve: Serve) -> None:
    engine, server = serve(rate_limit_per_second=0.1, rate_limit_burst=3)
    send_id = add_send(engine)
    link = "https://shop.example/a"
    with client(server) as http:
        allowed = [http.get(f"/o/{engine.tokens.open(send_id)}") for _ in range(3)]
        refused_open = http.get(f"/o/{engine.tokens.open(send_id)}")
        click = http.get(f"/c/{engine.tokens.click(send_id, 0, link)}")
        unsubscribe = http.post(f"/u/{engine.tokens.unsubscribe(send_id)}")
        webhook = http.post("/webhooks/standard", content=b"{}")
        health = http.get("/health")  # never limited
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert refused_open.status_code == 429 and refused_open.headers["retry-after"] == "1"
    assert (click.status_code, click.headers["location"]) == (302, link)
    assert unsubscribe.status_code == 429 and webhook.status_code == 429
    assert health.status_code == 200
    assert health.json()["intake"]["repeats"] == {"open": 2}  # the click is not counted
    server.drain()
    assert [e.type for e in events(engine)] == ["open"]  # nor stored


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(serve: Serve) -> None:
    engine, server = serve(
        rate_limit_per_second=0.1, rate_limit_burst=1, trusted_proxies=["127.0.0.0/30"]
    )
    send_id = add_send(engine)
    path = f"/o/{engine.tokens.open(send_id)}"

    def status(forwarded: str, source: str = "127.0.0.1") -> int:
        transport = httpx.HTTPTransport(local_address=source)
        with client(server, transport=transport) as http:
            return http.get(path, headers={"x-forwarded-for": forwarded}).status_code

    assert [status("203.0.113.7"), status("203.0.113.7")] == [200, 429]
    assert status("198.51.100.1, 203.0.113.8") == 200  # the right-most untrusted hop
    # 127.0.0.9 is no proxy of ours: what it forwards is its own invention.
    assert [status("203.0.113.9", "127.0.0.9"), status("203.0.113.10", "127.0.0.9")] == [200, 429]


# -- redirects, logs and pages -------------------------------------------------------------
def test_a_trailing_slash_is_a_404_never_a_redirect_to_the_host_header(serve: Serve) -> None:
    engine, server = serve()
    token = engine.tokens.click(add_send(engine), 0, "https://shop.example/a")
    with client(server) as http:
        response = http.get(f"/c/{token}/", headers={"host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers


def test_the_access_log_cuts_tokens_from_percent_encoded_paths(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    engine, server = serve()
    send_id = add_send(engine)
    token = engine.tokens.unsubscribe(send_id)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(caplog.handler)  # uvicorn's access logger does not propagate
    try:
        with client(server) as http:
            for path in (f"/%75/{token}", f"/u/%{ord(token[0]):02X}{token[1:]}", f"/u/{token}"):
                assert http.get(path).status_code == 200
    finally:
        access.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 3
    assert all("/u/…" in line and token[4:16] not in line for line in lines), lines


def test_every_page_refuses_framing_and_sniffing(serve: Serve) -> None:
    engine, server = serve()
    token = engine.tokens.unsubscribe(add_send(engine))
    with client(server) as http:
        pages = [http.get(f"/u/{token}"), http.post(f"/u/{token}", data={"scope": "campaign"})]
        other = [http.get("/health"), http.get("/c/nope")]
    for page in pages:
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for response in pages + other:
        assert response.headers["x-content-type-options"] == "nosniff"
