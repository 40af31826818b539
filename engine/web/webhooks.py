"""The provider webhook route: ``POST /webhooks/{provider}``.

The handler framework (verification, parsing, the handlers themselves) is
``engine.webhooks``; this is only the HTTP side, moved here from ``engine/web.py``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from engine.webhooks import WebhookError, receive_webhook

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)
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
    """``POST /webhooks/{provider}``: verify, parse, store each event once.

    2xx only once every event is stored; 5xx when storing failed, so the provider
    retries (the retry is deduplicated).
    """
    provider = request.path_params["provider"]
    if provider not in engine.webhook_handlers:
        return PlainTextResponse(
            "Not found\n", status_code=404, headers={"Cache-Control": "no-store"}
        )
    if not engine.webhook_handlers.get(provider).enabled:
        return JSONResponse({"error": f"webhook {provider!r} is not configured"}, 404)
    body = await read_limited(request, MAX_WEBHOOK_BODY)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    try:
        stored, duplicates = await run_in_threadpool(
            receive_webhook, engine, provider, request.headers, body
        )
    except WebhookError as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    except Exception:
        log.exception("could not store %s webhook events; the provider will retry", provider)
        return JSONResponse({"error": "events not stored; retry later"}, status_code=503)
    return JSONResponse({"stored": stored, "duplicates": duplicates})
