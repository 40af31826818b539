"""The HTTP API: applications trigger alerts and read what became of them (docs/api.md).

Every request names its API key (``Authorization: Bearer tm_...``, ``tailormail keys``);
a key has scopes (``trigger``, ``read``) and, optionally, campaigns, and a rate of its own
(``[api]``, 429 with ``Retry-After`` beyond it). Every refusal is one JSON body,
``{"error": {"code", "message"}}``, with a stable code. A 202 is sent only once the
triggers are committed (``engine.sending.triggers``); a request carrying an
``Idempotency-Key`` gets its first answer again (``engine.sending.idempotency``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.api_keys import ApiKey, verify_key
from engine.feedback.outbound import OutboundPolicy
from engine.feedback.status_webhooks import dispatch_due
from engine.sending.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyError,
    request_digest,
)
from engine.sending.release import Releaser
from engine.sending.trigger_batches import TriggerBatcher
from engine.sending.triggers import Group, Replayed, TriggerDesk, TriggerError, TriggerRequest
from engine.web.api_errors import NO_STORE, ApiError, invalid
from engine.web.api_openapi import openapi_document
from engine.web.api_schema import BatchIn, TriggerIn, TriggerRequestIn
from engine.web.api_subscriptions import SubscriptionRoutes
from engine.web.bodies import BodyBudget, BodyRefused, bounded_body
from engine.web.ratelimit import RateLimiter

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)
_KEY_CACHE_SIZE = 1024  # verified keys remembered at once (a full cache starts over)


def _request(campaign: str, trigger: TriggerIn) -> TriggerRequest:
    recipient = trigger.recipient
    return TriggerRequest(
        campaign=campaign,
        recipient_id=recipient.id,
        email=recipient.email,
        attributes=dict(recipient.attributes),
        data=trigger.data,
        items=trigger.items,
        send_at=trigger.send_at,
        event_id=trigger.event_id,
    )


class ApiApp:
    """The endpoints, bound to one engine; ``create_api_app`` routes to them."""

    def __init__(self, engine: Engine, *, releaser: Releaser | None = None) -> None:
        """Serve ``engine``'s API; ``releaser`` (when this process sends) is woken by every
        trigger due now."""
        self.engine = engine
        settings = engine.settings.api
        self.settings = settings
        self.desk = TriggerDesk(engine)
        self.releaser = releaser
        self.rate = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.bodies = BodyBudget(max(settings.max_body_bytes * 4, 32 * 1024 * 1024))
        self.body_timeout = engine.settings.web.body_timeout_seconds
        self._keys: dict[str, tuple[ApiKey, float]] = {}  # verified keys, until when
        self._checking: dict[str, asyncio.Future[ApiKey | None]] = {}
        self.subscriptions = SubscriptionRoutes(engine, self._key, self._json_body)
        # Concurrent requests are decided and committed together, a round at a time.
        self.batcher = TriggerBatcher(self.desk, threads=settings.workers)

    # -- guards ---------------------------------------------------------------------------
    async def _key(self, request: Request, scope: str, campaign: str | None = None) -> ApiKey:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "send an API key: Authorization: Bearer tm_... (`tailormail keys create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = await self._verified(token.strip())
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "this API key is not valid (mistyped, or revoked)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not self.rate.allow(key.id):
            wait = max(1, math.ceil(1 / self.settings.rate_limit_per_second))
            raise ApiError(
                429,
                "rate_limited",
                f"this key is over its rate ({self.settings.rate_limit_per_second:g} requests "
                "a second); retry after the time Retry-After says",
                headers={"Retry-After": str(wait)},
            )
        if not key.allows(scope, campaign):
            where = f" on campaign {campaign!r}" if campaign and scope in key.scopes else ""
            raise ApiError(403, "forbidden", f"this key may not {scope}{where}")
        return key

    async def _verified(self, token: str) -> ApiKey | None:
        """The key ``token`` is, checked in the database at most once per
        ``[api] key_cache_seconds`` (a revoked key stops working within that time)."""
        now = time.monotonic()
        cached = self._keys.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        # One check per key at a time: when its entry expires under load, the requests
        # that arrive meanwhile wait for that check instead of each asking the database.
        pending = self._checking.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        check = asyncio.ensure_future(run_in_threadpool(verify_key, self.engine.db, token))
        self._checking[token] = check
        try:
            key = await asyncio.shield(check)
        finally:
            self._checking.pop(token, None)
        if key is not None and self.settings.key_cache_seconds > 0:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[token] = (key, time.monotonic() + self.settings.key_cache_seconds)
        return key

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        try:
            async with bounded_body(
                request, "api", limit=limit, timeout=self.body_timeout, budget=self.bodies
            ) as body:
                return body
        except BodyRefused as refused:
            code = {413: "too_large", 408: "too_slow", 503: "busy"}.get(refused.status, "bad_body")
            raise ApiError(refused.status, code, refused.message, headers=refused.headers) from None

    async def _json_body(self, request: Request) -> Any:
        return self._json(await self._body(request))

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None

    # -- triggering -----------------------------------------------------------------------
    async def trigger(self, request: Request) -> Response:
        """``POST /v1/campaigns/{name}/trigger``: one alert."""
        return await self._trigger(request, batch=False)

    async def triggers(self, request: Request) -> Response:
        """``POST /v1/campaigns/{name}/triggers``: up to 1,000 alerts, all or none."""
        return await self._trigger(request, batch=True)

    async def _trigger(self, request: Request, *, batch: bool) -> Response:
        try:
            campaign = request.path_params["name"]
            key = await self._key(request, "trigger", campaign)
            try:
                self.desk.campaign(campaign)  # a typo is a 404 before the body is looked at
            except TriggerError as exc:
                raise ApiError(exc.status, exc.code, str(exc)) from None
            body = await self._body(request)
            raw = self._json(body)
            try:
                parsed: BatchIn | TriggerRequestIn = (
                    BatchIn.model_validate(raw) if batch else TriggerRequestIn.model_validate(raw)
                )
            except ValidationError as exc:
                raise invalid(exc) from None
            if isinstance(parsed, BatchIn):
                wanted = [_request(campaign, t) for t in parsed.triggers]
            else:
                wanted = [_request(campaign, parsed)]
            idempotency = None if parsed.dry_run else self._idempotency(request, key, body)
            try:
                if parsed.dry_run:
                    dry = functools.partial(self.desk.accept, wanted, dry_run=True)
                    answers = await run_in_threadpool(dry)
                else:
                    group = Group(wanted, key.id, idempotency, wrap=batch)
                    answers = await asyncio.wrap_future(self.batcher.submit(group))
                    if isinstance(answers, Replayed):  # its key was answered before
                        headers = NO_STORE | {"Idempotent-Replayed": "true"}
                        return JSONResponse(answers.answer, answers.status_code, headers)
            except TriggerError as exc:
                raise ApiError(exc.status, exc.code, str(exc), index=exc.index) from None
            except IdempotencyError as exc:
                raise ApiError(exc.status, exc.code, str(exc)) from None
        except ApiError as error:
            return error.response()
        if self.releaser is not None and any(a.get("status") == "queued" for a in answers):
            self.releaser.wake()
        status = 200 if parsed.dry_run else 202
        return JSONResponse({"triggers": answers} if batch else answers[0], status, NO_STORE)

    @staticmethod
    def _idempotency(request: Request, key: ApiKey, body: bytes) -> tuple[str, str, str] | None:
        """The (key id, Idempotency-Key, request digest) of this request (None: no header);
        the batcher answers a key used before with its first answer."""
        header = request.headers.get("idempotency-key")
        if header is None:
            return None
        value = header.strip().strip('"')
        if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
            raise ApiError(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            )
        return key.id, value, request_digest(request.method, request.url.path, body)

    # -- reading and cancelling -------------------------------------------------------------
    async def read(self, request: Request) -> Response:
        """``GET /v1/triggers/{id}``: the decision and the outcome so far."""
        try:
            key = await self._key(request, "read")
            answer = await run_in_threadpool(self.desk.status, request.path_params["id"])
            self._visible(key, answer, request.path_params["id"])
        except ApiError as error:
            return error.response()
        return JSONResponse(answer, 200, NO_STORE)

    async def cancel(self, request: Request) -> Response:
        """``POST /v1/triggers/{id}/cancel``: a trigger still waiting is not sent."""
        trigger_id = request.path_params["id"]
        try:
            key = await self._key(request, "trigger")
            answer = await run_in_threadpool(self.desk.status, trigger_id)
            self._visible(key, answer, trigger_id)
            try:
                answer = await run_in_threadpool(self.desk.cancel, trigger_id)
            except TriggerError as exc:
                raise ApiError(exc.status, exc.code, str(exc)) from None
        except ApiError as error:
            return error.response()
        return JSONResponse(answer, 200, NO_STORE)

    @staticmethod
    def _visible(key: ApiKey, answer: dict[str, Any] | None, trigger_id: str) -> None:
        """A trigger of a campaign the key may not see is, to it, no trigger."""
        hidden = key.campaigns is not None and answer is not None
        if answer is None or (hidden and answer["campaign"] not in (key.campaigns or ())):
            raise ApiError(404, "not_found", f"no trigger {trigger_id!r}")

    # -- the rest -----------------------------------------------------------------------------
    async def openapi(self, request: Request) -> Response:
        """``GET /v1/openapi.json``: this API's OpenAPI 3.1 document."""
        return JSONResponse(openapi_document())

    async def health(self, request: Request) -> Response:
        """``GET /v1/health``: the API answers (no key needed)."""
        return JSONResponse({"status": "ok"}, headers=NO_STORE)


def create_api_app(engine: Engine, *, release: bool = True) -> Starlette:
    """The API's Starlette app. With ``release``, its lifespan runs a releaser thread that
    sends triggers as they come due (woken at once by a trigger due now) and a thread that
    posts the status webhooks."""
    releaser = Releaser(engine) if release else None
    app = ApiApp(engine, releaser=releaser)

    stop = threading.Event()

    def dispatch() -> None:
        policy = OutboundPolicy.from_settings(engine.settings.api.webhooks)
        while not stop.wait(engine.settings.api.webhooks.dispatch_interval_seconds):
            try:
                while dispatch_due(engine.db, policy=policy).claimed:
                    pass
            except Exception:  # a database outage: the next round tries again
                log.exception("status webhooks: dispatching failed")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        threads = []
        if releaser is not None:
            interval = engine.settings.api.release_interval_seconds
            threads.append(threading.Thread(target=releaser.run_forever, args=(interval,)))
            threads.append(threading.Thread(target=dispatch))
        for thread in threads:
            thread.daemon = True
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if releaser is not None:
                releaser.stop()
            for thread in threads:
                await run_in_threadpool(thread.join, 30)
            await run_in_threadpool(app.batcher.close)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "refused")
        headers = dict(exc.headers or {})  # a 405's Allow (RFC 9110)
        return ApiError(exc.status_code, code, str(exc.detail), headers=headers).response()

    routes = [
        Route("/v1/campaigns/{name}/trigger", app.trigger, methods=["POST"]),
        Route("/v1/campaigns/{name}/triggers", app.triggers, methods=["POST"]),
        Route("/v1/triggers/{id}", app.read, methods=["GET"]),
        Route("/v1/triggers/{id}/cancel", app.cancel, methods=["POST"]),
        Route("/v1/subscriptions", app.subscriptions.collection, methods=["GET", "POST"]),
        Route("/v1/subscriptions/{id}", app.subscriptions.remove, methods=["DELETE"]),
        Route("/v1/dead-letters", app.subscriptions.dead, methods=["GET"]),
        Route("/v1/dead-letters/{id}/replay", app.subscriptions.replay_one, methods=["POST"]),
        Route("/v1/openapi.json", app.openapi, methods=["GET"]),
        Route("/v1/health", app.health, methods=["GET"]),
    ]
    starlette = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: refused}
    )
    starlette.router.redirect_slashes = False
    starlette.state.api = app
    return starlette
