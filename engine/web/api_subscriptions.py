"""The API's status webhook endpoints: an application subscribes a URL to the outcomes of
its key's triggers, lists and removes its subscriptions, reads and replays its dead
letters (``engine.feedback.status_webhooks``; the command line has the same as
``tailormail subscriptions``, for every key)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import col
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.api_keys import ApiKey
from engine.db import session_scope
from engine.errors import TailormailError
from engine.feedback.outbound import OutboundPolicy
from engine.feedback.status_webhooks import (
    add_subscription,
    dead_letters,
    remove_subscription,
    replay,
)
from engine.models import WebhookSubscriptionRow
from engine.web.api_errors import NO_STORE, ApiError, invalid
from engine.web.api_schema import SubscriptionIn

if TYPE_CHECKING:
    from engine.app import Engine

KeyCheck = Callable[[Request, str], Awaitable[ApiKey]]


def _shown(row: WebhookSubscriptionRow, secret: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": row.events,
        "campaigns": row.campaigns,
        "created_at": row.created_at.isoformat(),
        "secret": secret,
    }


class SubscriptionRoutes:
    """``/v1/subscriptions`` and ``/v1/dead-letters``, for the key that asks (scope
    ``trigger``: subscribing is acting on its triggers)."""

    def __init__(self, engine: Engine, key: KeyCheck, body: Callable[[Request], Awaitable[Any]]):
        self.engine = engine
        self._key = key
        self._body = body

    def _mine(self, key: ApiKey) -> list[WebhookSubscriptionRow]:
        with session_scope(self.engine.db) as session:
            stmt = (
                select(WebhookSubscriptionRow)
                .where(col(WebhookSubscriptionRow.key_id) == key.id)
                .where(col(WebhookSubscriptionRow.disabled_at).is_(None))
                .order_by(col(WebhookSubscriptionRow.created_at))
            )
            return list(session.scalars(stmt).all())

    async def collection(self, request: Request) -> Response:
        """``/v1/subscriptions``: GET lists, POST adds (one route, so a 405 lists both)."""
        return await (self.add(request) if request.method == "POST" else self.listing(request))

    async def add(self, request: Request) -> Response:
        """``POST /v1/subscriptions``: subscribe a URL; answers its secret, once."""
        try:
            key = await self._key(request, "trigger")
            try:
                wanted = SubscriptionIn.model_validate(await self._body(request))
            except ValidationError as exc:
                raise invalid(exc) from None
            campaigns = wanted.campaigns
            if key.campaigns is not None:
                outside = sorted(set(campaigns or ()) - set(key.campaigns))
                if outside:
                    raise ApiError(403, "forbidden", f"this key may not act on {outside[0]!r}")
                campaigns = campaigns or list(key.campaigns)
            policy = OutboundPolicy.from_settings(self.engine.settings.api.webhooks)
            try:
                row, secret = await run_in_threadpool(
                    lambda: add_subscription(
                        self.engine.db,
                        wanted.url,
                        events=wanted.events,
                        campaigns=campaigns,
                        key_id=key.id,
                        policy=policy,
                    )
                )
            except TailormailError as exc:
                raise ApiError(422, "invalid_subscription", str(exc)) from None
        except ApiError as error:
            return error.response()
        return JSONResponse(_shown(row, secret), 201, NO_STORE)

    async def listing(self, request: Request) -> Response:
        """``GET /v1/subscriptions``: the key's subscriptions (never their secrets)."""
        try:
            key = await self._key(request, "trigger")
        except ApiError as error:
            return error.response()
        rows = await run_in_threadpool(self._mine, key)
        return JSONResponse({"subscriptions": [_shown(r) for r in rows]}, headers=NO_STORE)

    async def remove(self, request: Request) -> Response:
        """``DELETE /v1/subscriptions/{id}``: stop posting to it (its secret is erased)."""
        sub_id = request.path_params["id"]
        try:
            key = await self._key(request, "trigger")
            mine = {r.id for r in await run_in_threadpool(self._mine, key)}
            if sub_id not in mine:
                raise ApiError(404, "not_found", f"no subscription {sub_id!r}")
            await run_in_threadpool(remove_subscription, self.engine.db, sub_id)
        except ApiError as error:
            return error.response()
        return Response(status_code=204, headers=NO_STORE)

    async def dead(self, request: Request) -> Response:
        """``GET /v1/dead-letters``: the key's deliveries whose every attempt failed."""
        try:
            key = await self._key(request, "trigger")
        except ApiError as error:
            return error.response()
        mine = {r.id for r in await run_in_threadpool(self._mine, key)}
        rows = await run_in_threadpool(dead_letters, self.engine.db, 1000)
        letters = [
            {
                "id": r.id,
                "subscription_id": r.subscription_id,
                "event_type": r.event_type,
                "trigger_id": r.trigger_id,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "last_status_code": r.last_status_code,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
            if r.subscription_id in mine
        ]
        return JSONResponse({"dead_letters": letters}, headers=NO_STORE)

    async def replay_one(self, request: Request) -> Response:
        """``POST /v1/dead-letters/{id}/replay``: post a dead letter again, from its first
        attempt."""
        raw = request.path_params["id"]
        try:
            key = await self._key(request, "trigger")
            mine = {r.id for r in await run_in_threadpool(self._mine, key)}
            letters = await run_in_threadpool(dead_letters, self.engine.db, 1000)
            wanted = next((r for r in letters if str(r.id) == raw), None)
            if wanted is None or wanted.id is None or wanted.subscription_id not in mine:
                raise ApiError(404, "not_found", f"no dead letter {raw!r}")
            try:
                await run_in_threadpool(replay, self.engine.db, wanted.id)
            except TailormailError as exc:
                raise ApiError(409, "not_replayable", str(exc)) from None
        except ApiError as error:
            return error.response()
        return JSONResponse({"replayed": 1}, headers=NO_STORE)
