"""The tracking app: click redirect, open pixel, unsubscribe, provider webhooks, health.

Nothing on the click, open or unsubscribe path waits for the database: the token says
where a link goes (``engine.tokens``), the event goes to the local log
(``engine.feedback.intake``), and the answer leaves. Only links minted before version 2 tokens
look their target up in the ledger. The app keeps no state a load balancer would care
about: any number of processes can serve one project, each with its own log.

What one client may take is bounded per process (``[web]`` settings, docs/security.md): a
rate limit per client (429 for opens, unsubscribes and webhooks; a click over it still
redirects, a valid link always works, but is neither stored nor counted), one stored open
or click per token per ``dedupe_window_seconds`` (repeats counted in ``/health``), user
agents and URLs cut to ``engine.feedback.intake.FIELD_CAPS`` before they are stored.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from engine.db import session_scope
from engine.feedback.bots import is_bot_user_agent, is_machine_open
from engine.feedback.intake import FIELD_CAPS, Intake
from engine.models import LedgerRow
from engine.tokens import TEST_SEND_ID, TokenData
from engine.types import EventType
from engine.web import pages
from engine.web.bodies import BodyBudget, BodyRefused, bounded_body
from engine.web.clients import ClientAddresses
from engine.web.metrics import MetricsEndpoint, ProcessCounts
from engine.web.ratelimit import RateLimiter
from engine.web.repeats import RepeatWindow
from engine.web.unsubscribed import current_scope
from engine.web.webhooks import webhook

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)

# The classic 1x1 transparent GIF (42 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = pages.NO_STORE
_NOT_HEADER_SAFE = re.compile(r"[^\x21-\x7e]+")  # spaces, controls, non-ASCII (IRIs)
_UNAVAILABLE = {"Retry-After": "5"} | NO_STORE
UNSUBSCRIBE_BODY = 64 * 1024  # a form with one field; one-click sends less


def _not_found() -> PlainTextResponse:
    return PlainTextResponse("Not found\n", status_code=404, headers=NO_STORE)


def _unavailable() -> PlainTextResponse:
    return PlainTextResponse("Try again in a moment\n", status_code=503, headers=_UNAVAILABLE)


def too_many() -> PlainTextResponse:
    """429: this client is over its rate (``[web] rate_limit_per_second``)."""
    headers = {"Retry-After": "1"} | NO_STORE
    return PlainTextResponse("Too many requests\n", status_code=429, headers=headers)


def _agent(request: Request) -> str | None:
    """The user agent, cut to what is stored (a 16 KB one costs the bot check nothing)."""
    agent = request.headers.get("user-agent")
    return agent[: FIELD_CAPS["user_agent"]] if agent is not None else None


class TrackingApp:
    """The endpoints, bound to one engine and one intake; ``create_app`` routes to them."""

    def __init__(self, engine: Engine, intake: Intake | None = None) -> None:
        """Serve tracking for ``engine`` (its tokens, campaigns and webhook handlers)."""
        self.engine = engine
        self.tokens = engine.tokens
        self.intake = intake or Intake(engine)
        web = engine.settings.web
        self.clients = ClientAddresses(web.trusted_proxies)
        self.rate = RateLimiter(web.rate_limit_per_second, web.rate_limit_burst)
        self.repeats = RepeatWindow(web.dedupe_window_seconds)
        self.bodies = BodyBudget(web.max_buffered_body_bytes)
        self.counts = ProcessCounts()
        self.metrics = MetricsEndpoint(engine, self.intake, self.counts)

    def within_rate(self, request: Request) -> bool:
        """True when the request's client is within its rate (spends one token)."""
        peer = request.client.host if request.client is not None else None
        return self.rate.allow(self.clients.of(peer, request.headers))

    async def click(self, request: Request) -> Response:
        """``GET|HEAD /c/{token}``: record the click in the log, redirect to its target."""
        data = self.tokens.verify(request.path_params["token"], "click")
        if data is None:
            return _not_found()
        url = data.url
        if url is None:  # a version 1 token: its target is in the ledger
            try:
                url = await run_in_threadpool(self._stored_link, data)
            except Exception:
                log.warning("cannot resolve an old-style link while the database is down")
                return _unavailable()
        if url is None or not url.lower().startswith(("http://", "https://")):
            return _not_found()
        agent = _agent(request)
        # Security gateways probe links with HEAD or announce themselves in the user agent:
        # still redirect them (the link must work) but keep the click out of the reward.
        bot = request.method == "HEAD" or is_bot_user_agent(agent)
        # A test send's link redirects, recording nothing; so does a click over the rate.
        record = data.send_id != TEST_SEND_ID and self.within_rate(request)
        try:
            if record and self.repeats.first("click", (data.send_id, data.link_index, bot)):
                self.intake.record(
                    EventType.CLICK,
                    data.send_id,
                    url=url,
                    user_agent=agent,
                    bot=bot,
                    data={"link_index": data.link_index},
                )
        except OSError:
            log.exception("the intake log cannot be written")
            return _unavailable()  # not acknowledged, so nothing is lost: the reader retries
        # Percent-encode what a Location header cannot carry, leaving the rest as stored.
        location = _NOT_HEADER_SAFE.sub(lambda match: quote(match.group()), url)
        headers = NO_STORE | {"Location": location, "Referrer-Policy": "no-referrer"}
        return Response(status_code=302, headers=headers)

    def _stored_link(self, data: TokenData) -> str | None:
        with session_scope(self.engine.db) as session:
            row = session.get(LedgerRow, data.send_id)
        links = (row.links or []) if row is not None else []
        index = data.link_index
        return links[index] if index is not None and 0 <= index < len(links) else None

    async def open(self, request: Request) -> Response:
        """``GET /o/{token}``: the pixel; an open is recorded only for a genuine token."""
        if not self.within_rate(request):
            return too_many()
        data = self.tokens.verify(request.path_params["token"], "open")
        if data is not None and data.send_id != TEST_SEND_ID:
            agent = _agent(request)
            machine = request.method == "HEAD" or is_machine_open(agent)
            bot = is_bot_user_agent(agent)
            if not self.repeats.first("open", (data.send_id, machine, bot)):
                return Response(PIXEL, media_type="image/gif", headers=NO_STORE)
            try:
                self.intake.record(
                    EventType.OPEN,
                    data.send_id,
                    user_agent=agent,
                    bot=bot,
                    machine=machine,
                )
            except OSError:
                log.exception("the intake log cannot be written; an open is lost")
        # The same answer either way, so the pixel is no oracle for guessing tokens.
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)

    def _campaign_label(self, data: TokenData) -> str | None:
        campaign = self.engine.campaigns.get(data.campaign or "")
        if campaign is None:
            return data.campaign
        return campaign.description or campaign.name

    async def unsubscribe_page(self, request: Request) -> Response:
        """``GET /u/{token}``: offer both scopes; do nothing (scanners follow every GET)."""
        data = self.tokens.verify(request.path_params["token"], "unsubscribe")
        if data is None:
            return _not_found()
        if data.send_id == TEST_SEND_ID:
            return pages.test_send(self._campaign_label(data))
        scope = await current_scope(self.engine, data.send_id)  # bounded; None when unsure
        if scope is not None:
            return pages.already(scope, self._campaign_label(data))
        return pages.confirm(self._campaign_label(data))

    async def unsubscribe(self, request: Request) -> Response:
        """``POST /u/{token}``: the form's choice, or RFC 8058 one-click (the default scope).

        Accepted into the log at once, applied by the writer (within seconds of the
        database answering, when it is down). Repeating it changes nothing.
        """
        if not self.within_rate(request):
            return too_many()
        web = self.engine.settings.web
        try:
            async with bounded_body(
                request,
                "unsubscribe",
                limit=UNSUBSCRIBE_BODY,
                timeout=web.body_timeout_seconds,
                budget=self.bodies,
            ) as body:
                pass
        except BodyRefused as refused:
            return PlainTextResponse(f"{refused.message}\n", refused.status, refused.headers)
        data = self.tokens.verify(request.path_params["token"], "unsubscribe")
        if data is None:
            return _not_found()
        if data.send_id == TEST_SEND_ID:  # one-click from a test send: nobody to unsubscribe
            return pages.test_send(self._campaign_label(data))
        # Our form names a scope; "List-Unsubscribe=One-Click" (or no body) gets the default.
        chosen = parse_qs((body or b"").decode("latin-1")).get("scope", [""])[-1]
        scope = chosen if chosen in pages.SCOPES else self.engine.settings.web.unsubscribe_scope
        try:
            self.intake.record(
                EventType.UNSUBSCRIBE,
                data.send_id,
                dedupe_key=f"unsub:{data.send_id}:{scope}",
                user_agent=_agent(request),
                data={"scope": scope},
            )
        except OSError:
            log.exception("the intake log cannot be written")
            return _unavailable()
        return pages.done(scope, self._campaign_label(data))

    async def webhook(self, request: Request) -> Response:
        """``POST /webhooks/{provider}``: see ``engine.web.webhooks.webhook``."""
        if not self.within_rate(request):
            return too_many()
        answer = await webhook(self.engine, request, self.bodies)
        self.counts.webhook(request.path_params["provider"], answer.status_code)
        return answer

    def health(self, request: Request) -> Response:
        """``GET /health``: 200 when the database answers, 503 when it does not.

        ``intake.pending`` counts events in this process's log not yet in the database.
        """
        intake = {"pending": self.intake.pending, "repeats": dict(self.repeats.repeats)}
        try:
            with self.engine.db.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            body = {"status": "error", "database": "error", "intake": intake}
            return JSONResponse(body, 503, NO_STORE)
        body = {"status": "ok", "database": "ok", "intake": intake}
        return JSONResponse(body, headers=NO_STORE)


def _same_port_api(engine: Engine) -> Starlette | None:
    """The HTTP API, when ``[api] mode = "same_port"`` serves it from this app (and a
    campaign is triggered); else None (it has its own port, or is off)."""
    if engine.settings.api.mode != "same_port":
        return None
    if not any(campaign.triggered for campaign in engine.campaigns.values()):
        return None
    from engine.web.api import create_api_app  # lazy: only a project serving its API here

    return create_api_app(engine)


def create_app(engine: Engine, intake: Intake | None = None) -> Starlette:
    """The Starlette app serving ``engine``'s tracking links, webhooks and health check.

    Its lifespan starts the intake's writer and, at shutdown, stores what it can; without
    a lifespan (an ASGI test transport) the intake starts on its first event.
    """
    engine.serve_webhooks()  # their secrets are needed here only, so checked here
    app = TrackingApp(engine, intake)

    api = _same_port_api(engine)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        app.intake.start()
        try:
            if api is None:
                yield
            else:  # the API's releaser and webhook threads run beside the tracking
                async with api.router.lifespan_context(api):
                    yield
        finally:
            await run_in_threadpool(app.intake.stop)

    routes: list[BaseRoute] = [
        Route("/c/{token}", app.click, methods=["GET", "HEAD"]),
        Route("/o/{token}", app.open, methods=["GET", "HEAD"]),
        Route("/u/{token}", app.unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", app.unsubscribe, methods=["POST"]),
        Route("/webhooks/{provider}", app.webhook, methods=["POST"]),
        Route("/health", app.health, methods=["GET"]),
        Route("/metrics", app.metrics.answer, methods=["GET"]),
    ]
    if api is not None:
        routes.append(Mount("", app=api))  # its routes all start with /v1
    starlette = Starlette(routes=routes, lifespan=lifespan)
    # "/c/<token>/" must not answer a redirect built from the request's Host header.
    starlette.router.redirect_slashes = False
    starlette.state.intake = app.intake
    return starlette
