"""Postmark webhooks: HTTP basic auth on the webhook URL, compared in constant time.

Postmark signs nothing: the credentials in the URL (``https://user:pass@host/...``) arrive
as an ``Authorization: Basic`` header, and there is no signed timestamp, so the framework's
tolerance check does not apply. One record per request; only bounces carry an id, so the
other records are deduplicated on their content.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from engine import hookimpl
from engine.feedback.webhooks import (
    HandlerOptions,
    WebhookHandler,
    WebhookVerificationError,
    as_dict,
    from_iso,
    header,
    json_body,
    optional_str,
    same,
    secret_from_env,
)
from engine.types import EventType, TrackingEvent
from plugins.webhooks.common import SEND_ID_FIELD, send_id_from, send_ref_from

_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
_NOT_BOUNCES = {"AutoResponder", "Subscribe", "AddressChange", "OpenRelayTest", "InboundError"}
# RecordType -> (event type, the field holding its time)
_RECORDS = {
    "Delivery": (EventType.DELIVERED, "DeliveredAt"),
    "Bounce": (EventType.BOUNCE, "BouncedAt"),
    "SpamComplaint": (EventType.COMPLAINT, "BouncedAt"),
    "Open": (EventType.OPEN, "ReceivedAt"),
    "Click": (EventType.CLICK, "ReceivedAt"),
    "SubscriptionChange": (EventType.UNSUBSCRIBE, "ChangedAt"),
}


class PostmarkOptions(HandlerOptions):
    """``[plugins.webhooks.postmark]``: the basic-auth user and the env var of its password."""

    username: str | None = None
    password_env: str | None = None


class PostmarkWebhook(WebhookHandler):
    """``POST /webhooks/postmark``."""

    provider = "postmark"
    Options = PostmarkOptions

    def __init__(self) -> None:
        self.expected: str | None = None

    def configure(self, options: HandlerOptions) -> None:
        """Build the expected ``Authorization`` value once."""
        assert isinstance(options, PostmarkOptions)
        if (options.username is None) != (options.password_env is None):
            raise ValueError("'username' and 'password_env' go together")
        if options.username is None or options.password_env is None:
            self.expected = None
            return
        password = secret_from_env(options.password_env)
        pair = f"{options.username}:{password}".encode()
        self.expected = "Basic " + base64.b64encode(pair).decode()

    @property
    def enabled(self) -> bool:
        """Only with credentials: an open endpoint would take anyone's bounces."""
        return self.expected is not None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Compare the whole ``Authorization`` header with the expected one."""
        given = header(headers, "Authorization")
        if self.expected is None or not same(self.expected, given):
            raise WebhookVerificationError("bad credentials")

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """One record; types outside the vocabulary (and soft auto-replies) are skipped."""
        raw = as_dict(json_body(body), "body")
        record = raw.get("RecordType")
        if record not in _RECORDS:
            return []
        kind, time_field = _RECORDS[str(record)]
        data: dict[str, Any] = {}
        bounce_id = raw.get("ID")
        if record == "Bounce":
            bounce = str(raw.get("Type"))
            if bounce in _NOT_BOUNCES:
                return []
            if bounce == "SpamComplaint":
                kind = EventType.COMPLAINT
            else:
                data["bounce_type"] = "hard" if bounce in _HARD else "soft"
                data["reason"] = optional_str(raw.get("Description"), "Description")
        if record == "SubscriptionChange" and raw.get("SuppressSending") is not True:
            return []  # a reactivation, not an unsubscribe
        metadata = as_dict(raw.get("Metadata") or {}, "Metadata")
        if bounce_id is not None and not isinstance(bounce_id, int | str):
            raise ValueError(f"ID must be a number, got {type(bounce_id).__name__}")
        return [
            TrackingEvent(
                type=kind,
                send_id=send_id_from(metadata.get(SEND_ID_FIELD)),
                send_ref=send_ref_from(metadata.get(SEND_ID_FIELD)),
                timestamp=from_iso(raw.get(time_field)),
                provider_event_id=f"{record}:{bounce_id}" if bounce_id is not None else None,
                provider_message_id=optional_str(raw.get("MessageID"), "MessageID"),
                url=optional_str(raw.get("OriginalLink"), "OriginalLink"),
                user_agent=optional_str(raw.get("UserAgent"), "UserAgent"),
                recipient_email=optional_str(raw.get("Recipient") or raw.get("Email"), "Recipient"),
                data=data,
            )
        ]


@hookimpl
def register_webhook_handlers(register: Callable[[str, WebhookHandler], None]) -> None:
    """Register the Postmark webhook."""
    register("postmark", PostmarkWebhook())
