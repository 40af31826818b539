"""The ``http_json`` backend: any JSON-over-HTTP sending service, or your own relay.

Each request is ``POST <url>`` with ``{"messages": [...]}``, ``batch_size`` messages per
request, each ``{"send_id", "message_id", "from", "to", "subject", "html", "text",
"headers", "metadata"}``. A 2xx answer may carry ``{"results": [...]}`` in the same order,
each ``{"id": "<provider id>", "status": "sent" | "failed" | "deferred", "error": "...",
"rejected": false}``; without it every message counts as sent under our Message-ID.
``send_id`` is the send's keyed reference (``engine.identifiers``), never the ledger id.

With ``idempotency_header`` set (for example ``Idempotency-Key``), every request carries
a key derived from its send ids, and a timeout or 5xx is retried with the same key: the
service must treat a repeated key as the same request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from engine import hookimpl
from engine.mime import format_message_id
from engine.types import Message, SendResult, SendStatus
from plugins.delivery.httpapi import (
    HTTPBackend,
    HTTPOptions,
    Outgoing,
    checked_headers,
    idempotency_key,
    results_for,
    secret_from,
)
from plugins.webhooks.common import send_id_for

if TYPE_CHECKING:
    import httpx

_STATUSES = {
    "sent": SendStatus.SENT,
    "failed": SendStatus.PERMANENT_FAILURE,
    "deferred": SendStatus.TEMPORARY_FAILURE,
}


class HTTPJSONOptions(HTTPOptions):
    """``[delivery.http_json]``: where to post, how to authenticate, how many per request."""

    url: str = Field(pattern=r"^https?://")
    # The variable whose value is sent as "Authorization: <auth_scheme> <token>". Any name:
    # only the project's own config sets it, never a shard task (docs/security.md).
    token_env: str | None = None
    auth_scheme: str = "Bearer"
    headers: dict[str, str] = Field(default_factory=dict)  # extra, non-secret headers
    batch_size: int = Field(default=10, ge=1, le=1000)
    idempotency_header: str | None = None


class HTTPJSONBackend(HTTPBackend):
    """Posts batches of messages as JSON; retries safely when idempotency keys are on."""

    name = "http_json"
    Options: ClassVar[type[HTTPOptions]] = HTTPJSONOptions
    options: HTTPJSONOptions

    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        token_env = self.options.token_env
        self.token = secret_from(self.name, "token_env", token_env) if token_env else None
        self.idempotent = self.options.idempotency_header is not None

    @property
    def batch_limit(self) -> int:
        """``batch_size`` messages per request."""
        return self.options.batch_size

    def payload(self, message: Message) -> dict[str, Any]:
        """One message as a JSON object."""
        return {
            "send_id": send_id_for(message),
            "message_id": format_message_id(message.message_id),
            "from": message.from_address,
            "to": message.to_address,
            "subject": message.subject,
            "html": message.html,
            "text": message.text,
            "headers": checked_headers(message),
            "metadata": message.metadata,
        }

    def build_request(self, client: httpx.Client, outgoing: Sequence[Outgoing]) -> httpx.Request:
        """``POST url`` with ``{"messages": [...]}`` and, if configured, the idempotency key."""
        headers = dict(self.options.headers)
        if self.token is not None:
            headers["Authorization"] = f"{self.options.auth_scheme} {self.token.get_secret_value()}"
        if self.options.idempotency_header:
            key = idempotency_key([item.message for item in outgoing])
            headers[self.options.idempotency_header] = key
        return client.build_request(
            "POST",
            self.options.url,
            json={"messages": [item.payload for item in outgoing]},
            headers=headers,
        )

    def read_results(
        self, outgoing: Sequence[Outgoing], response: httpx.Response
    ) -> list[SendResult]:
        """Per-message results when the answer lists them, else all sent."""
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        listed = answer.get("results") if isinstance(answer, dict) else None
        if listed is None:
            return [
                SendResult(
                    item.message.send_id,
                    SendStatus.SENT,
                    provider_id=format_message_id(item.message.message_id),
                )
                for item in outgoing
            ]
        if not isinstance(listed, list) or len(listed) != len(outgoing):
            return results_for(outgoing, SendStatus.UNKNOWN, f"unexpected answer: {answer!r}")
        return [_result(item.message, each) for item, each in zip(outgoing, listed, strict=True)]


def _result(message: Message, answer: Any) -> SendResult:
    if not isinstance(answer, dict) or answer.get("status", "sent") not in _STATUSES:
        return SendResult(message.send_id, SendStatus.UNKNOWN, error=f"unexpected {answer!r}")
    provider_id = answer.get("id")
    return SendResult(
        message.send_id,
        _STATUSES[answer.get("status", "sent")],
        provider_id=str(provider_id) if provider_id is not None else None,
        error=str(answer["error"]) if answer.get("error") else None,
        rejected=bool(answer.get("rejected", False)),
    )


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``http_json`` backend."""
    register("http_json", HTTPJSONBackend)
