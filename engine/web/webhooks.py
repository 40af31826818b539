"""The provider webhook route: ``POST /webhooks/{provider}``.

The handler framework (verification, parsing, the handlers themselves) is
``engine.webhooks``; this is only the HTTP side, moved here from ``engine/web.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from engine.events import record_event
from engine.types import TrackingEvent
from engine.webhooks import WebhookVerificationError

if TYPE_CHECKING:
    from engine.app import Engine

MAX_WEBHOOK_BODY = 5 * 1024 * 1024  # providers batch events, but never anywhere near this


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def webhook(engine: Engine, request: Request) -> Response:
    """``POST /webhooks/{provider}``: verify, parse, store each event once."""
    provider = request.path_params["provider"]
    if provider not in engine.webhook_handlers:
        return PlainTextResponse(
            "Not found\n", status_code=404, headers={"Cache-Control": "no-store"}
        )
    handler = engine.webhook_handlers.get(provider)
    body = await read_limited(request, MAX_WEBHOOK_BODY)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    try:
        events = await run_in_threadpool(handler.handle, request.headers, body)
    except WebhookVerificationError:
        return JSONResponse({"error": "verification failed"}, status_code=403)
    except (ValueError, KeyError) as exc:
        return JSONResponse({"error": f"unreadable payload: {exc}"}, status_code=400)
    stored = await run_in_threadpool(_store, engine, provider, events)
    return JSONResponse({"stored": stored, "duplicates": len(events) - stored})


def _store(engine: Engine, provider: str, events: list[TrackingEvent]) -> int:
    stored = 0
    for event in events:
        key = f"{provider}:{event.provider_event_id}" if event.provider_event_id else None
        stored += record_event(engine, event, dedupe_key=key)
    return stored
