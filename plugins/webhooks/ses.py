"""Amazon SES events through SNS: the SNS message signature, then the SES event inside.

SNS signs a canonical string of the message's fields with the key of the certificate at
``SigningCertURL`` (SHA1withRSA for SignatureVersion 1, SHA256withRSA for 2). The URL must
be https on an ``sns.<region>.amazonaws.com`` host (port 443 or none), and the topic must
be in the configured allow-list. A ``SubscriptionConfirmation`` for an allowed topic is
confirmed by fetching its ``SubscribeURL`` (same host rule) with the handler's injectable
HTTP client.

Everything that needs no fetch is checked first (the signed timestamp, then the topic, the
signature version, the certificate URL, the signature's encoding), so a stale, replayed or
forged message costs no outbound request; fetched keys are kept in a small LRU cache. Every
refusal answers the same 403 text (the reason goes to the log), so the answer tells nobody
whether a topic is on the allow-list.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from engine import hookimpl
from engine.feedback.webhooks import (
    HandlerOptions,
    WebhookHandler,
    WebhookPayloadError,
    WebhookVerificationError,
    as_dict,
    from_iso,
    json_body,
    optional_str,
)
from engine.types import EventType, TrackingEvent
from plugins.webhooks.common import SEND_ID_FIELD, send_id_from, send_ref_from

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
REFUSED = "not a verified SNS message of an allowed topic"
CERTIFICATES_KEPT = 16  # SNS signs with one certificate per region at a time
# The fields SNS signs, in its order, per message type (Subject only when present).
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_TYPES = {
    "Delivery": (EventType.DELIVERED, "delivery"),
    "DeliveryDelay": (EventType.DEFERRED, "deliveryDelay"),
    "Bounce": (EventType.BOUNCE, "bounce"),
    "Complaint": (EventType.COMPLAINT, "complaint"),
    "Open": (EventType.OPEN, "open"),
    "Click": (EventType.CLICK, "click"),
}


class SESOptions(HandlerOptions):
    """``[plugins.webhooks.ses]``: the SNS topics whose messages are accepted."""

    topic_arns: list[str] = []
    confirm_subscriptions: bool = True


def sns_url(url: Any, what: str) -> str:
    """``url`` if it is https on an SNS host; anything else fails verification."""
    if not isinstance(url, str):
        raise WebhookVerificationError(f"{what} missing")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme != "https"
        or not SNS_HOST.fullmatch(parts.hostname or "")
        or port not in (None, 443)
        or parts.username is not None
    ):
        raise WebhookVerificationError(f"{what} is not an https SNS URL: {url!r}")
    return url


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """SNS's canonical form: each signed field's name and value on lines of their own."""
    fields = _SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise WebhookVerificationError(f"unknown SNS message type {message.get('Type')!r}")
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise WebhookVerificationError(f"SNS field {name} missing")
        lines += [name, value]
    return ("\n".join(lines) + "\n").encode()


class SESWebhook(WebhookHandler):
    """``POST /webhooks/ses``: SES event publishing (or feedback notifications) via SNS."""

    provider = "ses"
    Options = SESOptions
    time_before_signature = True  # verifying may fetch a certificate

    def __init__(self, client: httpx.Client | None = None) -> None:
        self.topics: frozenset[str] = frozenset()
        self.confirm = True
        self.client = client  # built on first use; tests inject one with a MockTransport
        self._certificates: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def configure(self, options: HandlerOptions) -> None:
        """Take the topic allow-list."""
        assert isinstance(options, SESOptions)
        self.topics = frozenset(options.topic_arns)
        self.confirm = options.confirm_subscriptions

    @property
    def enabled(self) -> bool:
        """Only with an allow-list: SNS will sign anybody's topic."""
        return bool(self.topics)

    def _http(self) -> httpx.Client:
        # lazy: httpx (~0.1 s) only when a request is sent; a plugin module loads light
        import httpx

        with self._lock:
            if self.client is None:
                self.client = httpx.Client(timeout=10.0, follow_redirects=False)
            return self.client

    def _key(self, url: str) -> rsa.RSAPublicKey:
        """The certificate's RSA key, fetched once per URL (the last few URLs are kept)."""
        # lazy: httpx (~0.1 s) only when a request is sent; a plugin module loads light
        import httpx
        from cryptography import x509

        with self._lock:
            cached = self._certificates.get(url)
            if cached is not None:
                self._certificates.move_to_end(url)
                return cached
        # Fetched outside the lock: a slow fetch must not hold up requests with cached keys.
        try:
            response = self._http().get(url)
            response.raise_for_status()
            key = x509.load_pem_x509_certificate(response.content).public_key()
        except (httpx.HTTPError, ValueError) as exc:
            raise WebhookVerificationError(f"cannot load the signing certificate: {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookVerificationError("the signing certificate's key is not RSA")
        with self._lock:
            self._certificates[url] = key
            while len(self._certificates) > CERTIFICATES_KEPT:
                self._certificates.popitem(last=False)
        return key

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Topic allowed, certificate URL on SNS, signature valid for its version; every
        refusal is the same ``REFUSED`` 403 (its reason is logged)."""
        try:
            self._verify(body)
        except WebhookVerificationError as exc:
            log.info("SES webhook refused: %s", exc)
            raise WebhookVerificationError(REFUSED) from None

    def _verify(self, body: bytes) -> None:
        message = json_body(body)
        if not isinstance(message, dict) or not isinstance(message.get("Signature"), str):
            raise WebhookVerificationError("missing signature")
        if message.get("TopicArn") not in self.topics:
            raise WebhookVerificationError(f"topic {message.get('TopicArn')!r} is not allowed")
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise WebhookVerificationError("unknown SignatureVersion")
        url = sns_url(message.get("SigningCertURL"), "SigningCertURL")
        signed = string_to_sign(message)
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
        except binascii.Error:
            raise WebhookVerificationError("signature is not base64") from None
        key = self._key(url)  # the only step that may leave this process
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise WebhookVerificationError("bad signature") from None

    def signed_timestamp(self, headers: Mapping[str, str], body: bytes) -> datetime:
        """The signed ``Timestamp`` of the SNS message (when SNS sent this delivery)."""
        return from_iso(as_dict(json_body(body), "body").get("Timestamp"))

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """Confirm a subscription, or read the SES event in a notification's ``Message``."""
        envelope = as_dict(json_body(body), "body")
        kind = envelope.get("Type")
        if kind == "SubscriptionConfirmation":
            self._confirm(envelope)
            return []
        if kind != "Notification":
            return []
        event = as_dict(json_body(str(envelope["Message"]).encode()), "Message")
        return self._events(event, str(envelope["MessageId"]))

    def _confirm(self, envelope: dict[str, Any]) -> None:
        # lazy: httpx (~0.1 s) only when a request is sent; a plugin module loads light
        import httpx

        url = sns_url(envelope.get("SubscribeURL"), "SubscribeURL")
        if not self.confirm:
            log.warning(
                "SNS subscription to %s not confirmed (confirm_subscriptions = false)",
                envelope.get("TopicArn"),
            )
            return
        try:
            self._http().get(url).raise_for_status()
        except httpx.HTTPError as exc:
            # 5xx-worthy: SNS resends the confirmation when we do not answer 2xx.
            raise RuntimeError(f"could not confirm the SNS subscription: {exc}") from exc
        log.info("confirmed the SNS subscription to %s", envelope.get("TopicArn"))

    @staticmethod
    def _events(event: dict[str, Any], sns_id: str) -> list[TrackingEvent]:
        name = event.get("eventType") or event.get("notificationType")
        if name not in _TYPES:
            return []  # Send, Reject, Rendering Failure, Subscription...
        kind, section_name = _TYPES[str(name)]
        mail = as_dict(event.get("mail"), "mail")
        section = as_dict(event.get(section_name, {}), section_name)
        tags = as_dict(mail.get("tags") or {}, "mail.tags")
        common: dict[str, Any] = {
            "type": kind,
            "send_id": send_id_from(tags.get(SEND_ID_FIELD)),
            "send_ref": send_ref_from(tags.get(SEND_ID_FIELD)),
            "timestamp": from_iso(section.get("timestamp") or mail.get("timestamp")),
            "provider_message_id": optional_str(mail.get("messageId"), "mail.messageId"),
            "url": optional_str(section.get("link"), "click.link"),
            "user_agent": optional_str(section.get("userAgent"), "userAgent"),
        }
        data: dict[str, Any] = {}
        recipients: list[Any] = [None]
        if kind == EventType.BOUNCE:
            # Transient and Undetermined bounces may succeed later: only Permanent is hard.
            data["bounce_type"] = "hard" if section.get("bounceType") == "Permanent" else "soft"
            data["reason"] = optional_str(section.get("bounceSubType"), "bounceSubType")
            recipients = [
                as_dict(r, "bouncedRecipients[]").get("emailAddress")
                for r in section.get("bouncedRecipients") or [None]
            ] or [None]
        elif kind == EventType.COMPLAINT:
            recipients = [
                as_dict(r, "complainedRecipients[]").get("emailAddress")
                for r in section.get("complainedRecipients") or [None]
            ] or [None]
        elif kind in (EventType.DELIVERED, EventType.DEFERRED):
            recipients = list(section.get("recipients") or mail.get("destination") or [None])
        if not recipients:
            raise WebhookPayloadError("no recipients")
        return [
            TrackingEvent(
                provider_event_id=sns_id if len(recipients) == 1 else f"{sns_id}:{i}",
                recipient_email=optional_str(address, "recipient"),
                data=dict(data),
                **common,
            )
            for i, address in enumerate(recipients)
        ]


@hookimpl
def register_webhook_handlers(register: Callable[[str, WebhookHandler], None]) -> None:
    """Register the SES (via SNS) webhook."""
    register("ses", SESWebhook())
