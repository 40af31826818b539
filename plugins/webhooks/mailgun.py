"""Mailgun webhooks: HMAC-SHA256 of timestamp + token with the webhook signing key.

Mailgun posts ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``.
The signature does not cover the event data, so the token is single-use: a token seen
again with another body is refused (``single_use_token``), and the timestamp must be fresh.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from engine import hookimpl
from engine.feedback.webhooks import (
    HandlerOptions,
    WebhookHandler,
    WebhookPayloadError,
    WebhookVerificationError,
    as_dict,
    from_epoch,
    json_body,
    optional_str,
    same,
    secret_from_env,
)
from engine.types import EventType, TrackingEvent
from plugins.webhooks.common import SEND_ID_FIELD, send_id_from, send_ref_from

_TYPES = {
    "delivered": EventType.DELIVERED,
    "opened": EventType.OPEN,
    "clicked": EventType.CLICK,
    "unsubscribed": EventType.UNSUBSCRIBE,
    "complained": EventType.COMPLAINT,
    "rejected": EventType.BOUNCE,  # Mailgun refused to send it: it will never arrive
}


class MailgunOptions(HandlerOptions):
    """``[plugins.webhooks.mailgun]``: the env var holding the HTTP webhook signing key."""

    signing_key_env: str | None = None


class MailgunWebhook(WebhookHandler):
    """``POST /webhooks/mailgun``: one event per request, signed in the body."""

    provider = "mailgun"
    Options = MailgunOptions

    def __init__(self) -> None:
        self.key: bytes | None = None

    def configure(self, options: HandlerOptions) -> None:
        """Read the signing key from its environment variable, failing now if it is unset."""
        assert isinstance(options, MailgunOptions)
        if options.signing_key_env is None:
            self.key = None
            return
        self.key = secret_from_env(options.signing_key_env).encode()

    @property
    def enabled(self) -> bool:
        """Only with a signing key."""
        return self.key is not None

    @staticmethod
    def _signature(body: bytes) -> dict[str, Any]:
        envelope = json_body(body)
        if not isinstance(envelope, dict) or not isinstance(envelope.get("signature"), dict):
            raise WebhookVerificationError("missing signature")
        signature: dict[str, Any] = envelope["signature"]
        return signature

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Recompute the HMAC of timestamp + token and compare in constant time."""
        signature = self._signature(body)
        timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
        if not all(isinstance(v, str) and v for v in (timestamp, token, given)):
            raise WebhookVerificationError("missing signature field")
        if self.key is None:
            raise WebhookVerificationError("no signing key configured")
        expected = hmac.new(self.key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
        if not same(expected, str(given)):
            raise WebhookVerificationError("bad signature")

    def signed_timestamp(self, headers: Mapping[str, str], body: bytes) -> datetime:
        """The signature's timestamp (Unix seconds)."""
        return from_epoch(self._signature(body)["timestamp"])

    def single_use_token(self, headers: Mapping[str, str], body: bytes) -> str:
        """The signature's token: Mailgun never reuses one."""
        return str(self._signature(body)["token"])

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """The ``event-data`` object as one event (none for accepted and the like)."""
        raw = as_dict(as_dict(json_body(body), "body").get("event-data"), "event-data")
        name = raw.get("event")
        data: dict[str, Any] = {}
        if name == "failed":
            severity = raw.get("severity")
            if severity not in ("permanent", "temporary"):
                raise WebhookPayloadError(f"failed event with severity {severity!r}")
            # A temporary failure is Mailgun retrying: a deferral, not a bounce.
            kind = EventType.BOUNCE if severity == "permanent" else EventType.DEFERRED
            if kind == EventType.BOUNCE:
                data["bounce_type"] = "hard"
        elif name in _TYPES:
            kind = _TYPES[str(name)]
            if kind == EventType.BOUNCE:
                data["bounce_type"] = "hard"
        else:
            return []
        message = as_dict(raw.get("message", {}), "message")
        message_headers = as_dict(message.get("headers", {}), "message.headers")
        client = as_dict(raw.get("client-info", {}), "client-info")
        variables = as_dict(raw.get("user-variables", {}), "user-variables")
        reason = raw.get("delivery-status", {})
        if kind == EventType.BOUNCE and isinstance(reason, dict):
            data["reason"] = optional_str(reason.get("message"), "delivery-status.message")
        return [
            TrackingEvent(
                type=kind,
                send_id=send_id_from(variables.get(SEND_ID_FIELD)),
                send_ref=send_ref_from(variables.get(SEND_ID_FIELD)),
                timestamp=from_epoch(raw.get("timestamp")),
                provider_event_id=optional_str(raw.get("id"), "id"),
                provider_message_id=optional_str(message_headers.get("message-id"), "message-id"),
                url=optional_str(raw.get("url"), "url"),
                user_agent=optional_str(client.get("user-agent"), "user-agent"),
                recipient_email=optional_str(raw.get("recipient"), "recipient"),
                data=data,
            )
        ]


@hookimpl
def register_webhook_handlers(register: Callable[[str, WebhookHandler], None]) -> None:
    """Register the Mailgun webhook."""
    register("mailgun", MailgunWebhook())
