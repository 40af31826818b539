"""A generic webhook following the Standard Webhooks scheme (standardwebhooks.com).

Headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(space-separated ``v1,<base64 HMAC-SHA256>`` entries) over ``{id}.{timestamp}.{body}``,
keyed with the base64 secret after its ``whsec_`` prefix. The body is one event:
``{"type": "bounce", "timestamp": "...", "data": {"send_id", "message_id", "recipient",
"url", "user_agent", "bounce_type"}}`` with ``type`` from tailormail's vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from engine import hookimpl
from engine.feedback.outbound import decode_secret, signature
from engine.feedback.webhooks import (
    HandlerOptions,
    WebhookHandler,
    WebhookPayloadError,
    WebhookVerificationError,
    as_dict,
    from_epoch,
    from_iso,
    header,
    json_body,
    optional_str,
    same,
    secret_from_env,
)
from engine.types import EventType, TrackingEvent
from plugins.webhooks.common import send_id_from, send_ref_from


class StandardOptions(HandlerOptions):
    """``[plugins.webhooks.standard]``: the env var holding the ``whsec_...`` secret."""

    secret_env: str | None = None


class StandardWebhook(WebhookHandler):
    """``POST /webhooks/standard``: for any sender that speaks Standard Webhooks."""

    provider = "standard"
    Options = StandardOptions

    def __init__(self) -> None:
        self.key: bytes | None = None

    def configure(self, options: HandlerOptions) -> None:
        """Read and decode the secret now, so a bad one fails at start-up."""
        assert isinstance(options, StandardOptions)
        if options.secret_env is None:
            self.key = None
            return
        self.key = decode_secret(secret_from_env(options.secret_env))

    @property
    def enabled(self) -> bool:
        """Only with a secret."""
        return self.key is not None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Any ``v1`` signature in the header matching is enough (keys rotate)."""
        webhook_id = header(headers, "webhook-id")
        timestamp = header(headers, "webhook-timestamp")
        signatures = header(headers, "webhook-signature")
        if self.key is None:
            raise WebhookVerificationError("no secret configured")
        expected = signature(self.key, webhook_id, timestamp, body)  # what we sign outbound
        matches = [same(expected, entry) for entry in signatures.split() if entry[:3] == "v1,"]
        if not any(matches):
            raise WebhookVerificationError("bad signature")

    def signed_timestamp(self, headers: Mapping[str, str], body: bytes) -> datetime:
        """The ``webhook-timestamp`` header, whole seconds only."""
        value = header(headers, "webhook-timestamp")
        if not value.isascii() or not value.isdigit():
            raise WebhookPayloadError(f"webhook-timestamp is not Unix seconds: {value!r}")
        return from_epoch(int(value))

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """The one event of the body; ``webhook-id`` is its id (stable across retries)."""
        raw = as_dict(json_body(body), "body")
        try:
            kind = EventType(str(raw.get("type")))
        except ValueError:
            raise WebhookPayloadError(f"unknown event type {raw.get('type')!r}") from None
        data = as_dict(raw.get("data", {}), "data")
        extra: dict[str, str] = {}
        if kind == EventType.BOUNCE:
            bounce_type = data.get("bounce_type", "hard")
            if bounce_type not in ("hard", "soft"):
                raise WebhookPayloadError(f"bounce_type must be hard or soft: {bounce_type!r}")
            extra["bounce_type"] = bounce_type
        return [
            TrackingEvent(
                type=kind,
                send_id=send_id_from(data.get("send_id")),
                send_ref=send_ref_from(data.get("send_id")),
                timestamp=from_iso(raw.get("timestamp")),
                provider_event_id=header(headers, "webhook-id"),
                provider_message_id=optional_str(data.get("message_id"), "data.message_id"),
                url=optional_str(data.get("url"), "data.url"),
                user_agent=optional_str(data.get("user_agent"), "data.user_agent"),
                recipient_email=optional_str(data.get("recipient"), "data.recipient"),
                data=extra,
            )
        ]


@hookimpl
def register_webhook_handlers(register: Callable[[str, WebhookHandler], None]) -> None:
    """Register the Standard Webhooks handler as ``standard``."""
    register("standard", StandardWebhook())
