"""SendGrid's signed Event Webhook: ECDSA (P-256, SHA-256) over timestamp + raw body.

SendGrid posts a JSON array of events with ``X-Twilio-Email-Event-Webhook-Signature``
(base64 DER signature) and ``X-Twilio-Email-Event-Webhook-Timestamp``; the verification
key is the base64 DER public key shown under Mail Settings (a PEM key works too).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine import hookimpl
from engine.feedback.webhooks import (
    HandlerOptions,
    WebhookHandler,
    WebhookVerificationError,
    as_dict,
    from_epoch,
    header,
    json_body,
    optional_str,
)
from engine.types import EventType, TrackingEvent
from plugins.webhooks.common import SEND_ID_FIELD, send_id_from, send_ref_from

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_TYPES = {
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "bounce": EventType.BOUNCE,
    "dropped": EventType.BOUNCE,  # SendGrid will not deliver to this address at all
    "open": EventType.OPEN,
    "click": EventType.CLICK,
    "spamreport": EventType.COMPLAINT,
    "unsubscribe": EventType.UNSUBSCRIBE,
    "group_unsubscribe": EventType.UNSUBSCRIBE,
}


class SendGridOptions(HandlerOptions):
    """``[plugins.webhooks.sendgrid]``: the verification key (public, so not a secret)."""

    public_key: str | None = None


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key from SendGrid's base64 DER form or a PEM block (ValueError if not)."""
    raw = text.strip()
    try:
        key = (
            serialization.load_pem_public_key(raw.encode())
            if raw.startswith("-----BEGIN")
            else serialization.load_der_public_key(base64.b64decode(raw, validate=True))
        )
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"public_key is not a public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("public_key must be an ECDSA P-256 key (SendGrid's signed webhook key)")
    return key


class SendGridWebhook(WebhookHandler):
    """``POST /webhooks/sendgrid``: SendGrid's event array, signature checked first."""

    provider = "sendgrid"
    Options = SendGridOptions

    def __init__(self) -> None:
        self.key: ec.EllipticCurvePublicKey | None = None

    def configure(self, options: HandlerOptions) -> None:
        """Load the verification key."""
        assert isinstance(options, SendGridOptions)
        self.key = load_public_key(options.public_key) if options.public_key else None

    @property
    def enabled(self) -> bool:
        """Only with a verification key: unsigned SendGrid events are never accepted."""
        return self.key is not None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check the ECDSA signature over the timestamp header followed by the raw body."""
        signature = header(headers, SIGNATURE_HEADER)
        timestamp = header(headers, TIMESTAMP_HEADER)
        if self.key is None:
            raise WebhookVerificationError("no public_key configured")
        try:
            raw = base64.b64decode(signature, validate=True)
            self.key.verify(raw, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookVerificationError("bad signature") from None

    def signed_timestamp(self, headers: Mapping[str, str], body: bytes) -> datetime:
        """The signed timestamp header (Unix seconds)."""
        return from_epoch(header(headers, TIMESTAMP_HEADER))

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """One event per element of the array; kinds outside the vocabulary are skipped."""
        payload = json_body(body)
        if not isinstance(payload, list):
            payload = [payload]  # a single object is still readable
        return [e for e in (self._event(as_dict(raw, "event")) for raw in payload) if e]

    @staticmethod
    def _event(raw: dict[str, Any]) -> TrackingEvent | None:
        kind = _TYPES.get(str(raw.get("event")))
        if kind is None:  # processed, group_resubscribe...
            return None
        data: dict[str, Any] = {}
        if kind == EventType.BOUNCE:
            # "blocked" bounces are the receiver refusing for now (reputation, content).
            soft = raw.get("event") == "bounce" and raw.get("type") == "blocked"
            data["bounce_type"] = "soft" if soft else "hard"
            data["reason"] = optional_str(raw.get("reason"), "reason")
        message_id = optional_str(raw.get("sg_message_id"), "sg_message_id")
        return TrackingEvent(
            type=kind,
            send_id=send_id_from(raw.get(SEND_ID_FIELD)),
            send_ref=send_ref_from(raw.get(SEND_ID_FIELD)),
            timestamp=from_epoch(raw.get("timestamp")),
            provider_event_id=optional_str(raw.get("sg_event_id"), "sg_event_id"),
            # sg_message_id is the X-Message-Id of the send followed by ".filter...".
            provider_message_id=message_id.split(".filter")[0] if message_id else None,
            url=optional_str(raw.get("url"), "url"),
            user_agent=optional_str(raw.get("useragent"), "useragent"),
            machine=raw.get("sg_machine_open") is True,
            recipient_email=optional_str(raw.get("email"), "email"),
            data=data,
        )


@hookimpl
def register_webhook_handlers(register: Callable[[str, WebhookHandler], None]) -> None:
    """Register the SendGrid event webhook."""
    register("sendgrid", SendGridWebhook())
