"""The provider webhook route: ``POST /webhooks/{provider}``.

The handler framework (verification, parsing, the handlers themselves) is
``engine.feedback.webhooks``; this is only the HTTP side: the body read under the bounds of
``engine.web.bodies`` (``[web] max_webhook_body_bytes``, ``body_timeout_seconds``,
``max_buffered_body_bytes``), then verified, parsed and stored on a worker thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from engine.feedback.webhooks import WebhookError, receive_webhook
from engine.web.bodies import BodyBudget, BodyRefused, bounded_body

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)


async def webhook(engine: Engine, request: Request, budget: BodyBudget) -> Response:
    """``POST /webhooks/{provider}``: verify, parse, store each event once.

    2xx only once every event is stored; 5xx when storing failed, so the provider
    retries (the retry is deduplicated). ``budget`` bounds the body bytes held by all
    webhook requests at once.
    """
    provider = request.path_params["provider"]
    if provider not in engine.webhook_handlers:
        return PlainTextResponse(
            "Not found\n", status_code=404, headers={"Cache-Control": "no-store"}
        )
    if not engine.webhook_handlers.get(provider).enabled:
        return JSONResponse({"error": f"webhook {provider!r} is not configured"}, 404)
    web = engine.settings.web
    try:
        async with bounded_body(
            request,
            f"webhook {provider}",
            limit=web.max_webhook_body_bytes,
            timeout=web.body_timeout_seconds,
            budget=budget,
        ) as body:
            try:
                stored, duplicates = await run_in_threadpool(
                    receive_webhook, engine, provider, request.headers, body
                )
            except WebhookError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            except Exception:
                log.exception("%s webhook events not stored; the provider will retry", provider)
                return JSONResponse({"error": "events not stored; retry later"}, status_code=503)
    except BodyRefused as refused:
        return JSONResponse({"error": refused.message}, refused.status, refused.headers)
    return JSONResponse({"stored": stored, "duplicates": duplicates})
