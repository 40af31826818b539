"""The tracking web app: click redirect, open pixel, one-click unsubscribe, webhooks, health.

Tokens carry ids only; the click target comes from the ledger row stored at send time, so
a forged or edited token gets a 404, never a redirect elsewhere. The app keeps no state:
any number of workers can run behind a load balancer.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import socket
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.db import session_scope
from engine.events import record_event
from engine.models import LedgerRow
from engine.tracking import TokenData, is_bot_user_agent, is_machine_open
from engine.types import EventType, TrackingEvent
from engine.webhooks import WebhookError, receive_webhook

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)

# The classic 1x1 transparent GIF (42 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_WEBHOOK_BODY = 5 * 1024 * 1024  # providers batch events, but never anywhere near this
NO_STORE = {"Cache-Control": "no-store"}
_NOT_HEADER_SAFE = re.compile(r"[^\x21-\x7e]+")  # spaces, controls, non-ASCII (IRIs)
_PAGE_HEADERS = NO_STORE | {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}</style>
</head><body><h1>{title}</h1>{body}</body></html>
"""
_CONFIRM = """<p>Stop receiving these emails?</p><form method="post" action="">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>"""
_DONE = "<p>You are unsubscribed. You will get no further emails at this address.</p>"


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), headers=_PAGE_HEADERS)


def _not_found() -> PlainTextResponse:
    return PlainTextResponse("Not found\n", status_code=404, headers=NO_STORE)


class TrackingApp:
    """The endpoints, bound to one engine; ``create_app`` routes requests to them."""

    def __init__(self, engine: Engine) -> None:
        """Serve tracking for ``engine`` (its tokens, database and webhook handlers)."""
        self.engine = engine

    def _send(self, token: str, kind: str) -> tuple[TokenData, LedgerRow] | None:
        """The verified token and its ledger row, or None for anything not ours."""
        data = self.engine.tokens.verify(token, kind)
        if data is None:
            return None
        with session_scope(self.engine.db) as session:
            row = session.get(LedgerRow, data.send_id)
        return None if row is None else (data, row)

    def click(self, request: Request) -> Response:
        """``GET|HEAD /c/{token}``: record the click, redirect to the stored link."""
        found = self._send(request.path_params["token"], "click")
        if found is None:
            return _not_found()
        data, row = found
        links = row.links or []
        index = data.link_index
        if index is None or not 0 <= index < len(links):
            return _not_found()
        url = links[index]
        agent = request.headers.get("user-agent")
        # Security gateways probe links with HEAD or announce themselves in the user agent:
        # still redirect them (the link must work) but keep the click out of the reward.
        bot = request.method == "HEAD" or is_bot_user_agent(agent)
        self._record_quietly(
            EventType.CLICK, row.id, agent, url=url, bot=bot, data={"link_index": index}
        )
        # Percent-encode what a Location header cannot carry, leaving the rest as stored.
        location = _NOT_HEADER_SAFE.sub(lambda match: quote(match.group()), url)
        headers = NO_STORE | {"Location": location, "Referrer-Policy": "no-referrer"}
        return Response(status_code=302, headers=headers)

    def open(self, request: Request) -> Response:
        """``GET /o/{token}``: the pixel; an open is recorded only for a genuine token."""
        found = self._send(request.path_params["token"], "open")
        if found is not None:
            agent = request.headers.get("user-agent")
            machine = request.method == "HEAD" or is_machine_open(agent)
            self._record_quietly(
                EventType.OPEN, found[1].id, agent, bot=is_bot_user_agent(agent), machine=machine
            )
        # The same answer either way, so the pixel is no oracle for guessing tokens.
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)

    def _record_quietly(
        self, kind: EventType, send_id: int | None, agent: str | None, **fields: Any
    ) -> None:
        """Record a click or open; a database hiccup must not break the reader's link.

        An event the database cannot take goes to the spool, which the reward job replays.
        """
        event = TrackingEvent(kind, send_id, datetime.now(UTC), user_agent=agent, **fields)
        try:
            record_event(self.engine, event)
        except Exception:
            log.exception("could not store a %s event for send %s; spooled", kind, send_id)
            self.engine.spool.put(event)

    def unsubscribe_page(self, request: Request) -> Response:
        """``GET /u/{token}``: ask first, because mail scanners follow every GET link."""
        if self._send(request.path_params["token"], "unsubscribe") is None:
            return _not_found()
        return _page("Unsubscribe", _CONFIRM)

    async def unsubscribe(self, request: Request) -> Response:
        """``POST /u/{token}``: RFC 8058 one-click (or the form); suppresses at once."""
        # "List-Unsubscribe=One-Click" or the form: either is consent; read it, then ignore it.
        await _read_limited(request, 64 * 1024)
        token = request.path_params["token"]
        found = await run_in_threadpool(self._send, token, "unsubscribe")
        if found is None:
            return _not_found()
        row = found[1]
        agent = request.headers.get("user-agent")
        event = TrackingEvent(EventType.UNSUBSCRIBE, row.id, datetime.now(UTC), user_agent=agent)
        # One unsubscribe event per send; a repeated POST still re-asserts the suppression.
        await run_in_threadpool(record_event, self.engine, event, dedupe_key=f"unsub:{row.id}")
        return _page("Unsubscribed", _DONE)

    async def webhook(self, request: Request) -> Response:
        """``POST /webhooks/{provider}``: verify, parse, store each event once.

        2xx only once every event is stored; 5xx when storing failed, so the provider
        retries (the retry is deduplicated).
        """
        provider = request.path_params["provider"]
        if provider not in self.engine.webhook_handlers:
            return _not_found()
        if not self.engine.webhook_handlers.get(provider).enabled:
            return JSONResponse({"error": f"webhook {provider!r} is not configured"}, 404)
        body = await _read_limited(request, MAX_WEBHOOK_BODY)
        if body is None:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            stored, duplicates = await run_in_threadpool(
                receive_webhook, self.engine, provider, request.headers, body
            )
        except WebhookError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except Exception:
            log.exception("could not store %s webhook events; the provider will retry", provider)
            return JSONResponse({"error": "events not stored; retry later"}, status_code=503)
        return JSONResponse({"stored": stored, "duplicates": duplicates})

    def health(self, request: Request) -> Response:
        """``GET /health``: 200 when the database answers, 503 when it does not."""
        try:
            with self.engine.db.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"status": "error", "database": "error"}, 503, NO_STORE)
        return JSONResponse({"status": "ok", "database": "ok"}, headers=NO_STORE)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(engine: Engine) -> Starlette:
    """The Starlette app serving ``engine``'s tracking links, webhooks and health check."""
    app = TrackingApp(engine)
    routes = [
        Route("/c/{token}", app.click, methods=["GET", "HEAD"]),
        Route("/o/{token}", app.open, methods=["GET", "HEAD"]),
        Route("/u/{token}", app.unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", app.unsubscribe, methods=["POST"]),
        Route("/webhooks/{provider}", app.webhook, methods=["POST"]),
        Route("/health", app.health, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def serve(engine: Engine, host: str, port: int, *, log_level: str = "warning") -> None:
    """Run the tracking app with uvicorn in the foreground until interrupted."""
    uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level, lifespan="off")


class BackgroundServer:
    """uvicorn serving ``engine`` on a thread, for the demo and the tests.

    ``port=0`` binds a free port first; ``url`` names the real one. Entering waits until
    ``/health`` answers; leaving stops the server and joins the thread.
    """

    def __init__(
        self,
        engine: Engine,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        startup_timeout: float = 15.0,
    ) -> None:
        """Prepare (but do not start) a server for ``engine`` on ``host``:``port``."""
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._app = create_app(engine)
        self._log_level = log_level
        self._server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        """The server's base URL, with the real port once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> BackgroundServer:
        """Bind, start the thread and wait until ``/health`` answers."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Bind here and hand uvicorn the socket: the port is known, and nobody can take it
        # between choosing and listening.
        self._socket = sock = socket.create_server((self.host, self.port), family=family)
        self.port = int(sock.getsockname()[1])
        # A fresh uvicorn server on every start: a stopped one stays stopped.
        config = uvicorn.Config(self._app, log_level=self._log_level, lifespan="off")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="tailormail-web", daemon=True
        )
        self._thread.start()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                break  # uvicorn gave up (it logs why)
            try:
                # trust_env=False: a configured HTTP proxy must not see loopback requests.
                if httpx.get(f"{self.url}/health", timeout=1.0, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the tracking server on {self.url} did not answer /health")

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread and release the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
