"""Provider webhook handlers: verify every check in constant time, then parse.

A handler turns one provider request into normalized ``TrackingEvent`` objects; the web
app stores them (deduplicated, see ``dedupe_keys``) and calls the ``tracking_event`` hook.
``WebhookHandler.handle`` is the template method: ``verify`` (signature, credentials),
then the signed timestamp against the tolerance, then ``parse``. Anything a handler cannot
read becomes a ``WebhookPayloadError`` (400), never an unexpected 500.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.engine import Engine as SAEngine

from engine.db import insert_ignore, session_scope
from engine.errors import ConfigError
from engine.feedback.events import record_event
from engine.models import WebhookReceiptRow, utcnow
from engine.types import EventType, TrackingEvent

if TYPE_CHECKING:
    from engine.app import Engine

DEFAULT_TOLERANCE = timedelta(minutes=5)
# Later than any real event and early enough for datetime: a bigger epoch is not a time.
_MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z


class WebhookError(Exception):
    """A request the web app refuses; ``status`` is the HTTP answer."""

    status = 400


class WebhookVerificationError(WebhookError):
    """The request failed a signature, credential or single-use token check (403)."""

    status = 403


class WebhookPayloadError(WebhookError):
    """The request is authentic (or not yet known to be) but cannot be read (400)."""


class StaleWebhookError(WebhookPayloadError):
    """The provider's signed timestamp is outside the tolerance: a replay, or a bad clock."""


class HandlerOptions(BaseModel):
    """Base of a handler's options (``[plugins.webhooks.<provider>]``): unknown keys fail."""

    model_config = ConfigDict(extra="forbid")


class WebhookHandler:
    """Template method: ``verify`` the raw request, check its signed time, then ``parse``.

    Subclasses implement ``verify`` and ``parse``; those that sign a timestamp implement
    ``signed_timestamp`` (the time the provider signed *this request*, not the event's own
    time: a bounce retried hours later carries a fresh one). ``Options`` declares the
    handler's settings; ``configure`` receives them validated at engine start-up.
    """

    provider: ClassVar[str] = "base"
    Options: ClassVar[type[HandlerOptions]] = HandlerOptions
    tolerance: timedelta = DEFAULT_TOLERANCE
    # True where ``verify`` is costly (SNS fetches a certificate): the signed time is then
    # checked first, so a stale or replayed request costs nothing.
    time_before_signature: ClassVar[bool] = False

    def configure(self, options: HandlerOptions) -> None:
        """Take the validated options; called once by ``configure_handlers``."""

    @property
    def enabled(self) -> bool:
        """False until the handler has what it needs to verify (a key, a password...)."""
        return True

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ``WebhookVerificationError`` unless the request is authentic."""
        raise NotImplementedError

    def signed_timestamp(self, headers: Mapping[str, str], body: bytes) -> datetime | None:
        """When the provider signed this request, or None when the scheme signs no time."""
        return None

    def single_use_token(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """A token the provider promises never to reuse (checked after ``verify``), or None.

        For schemes whose signature does not cover the body (Mailgun signs a timestamp and
        a token): a token seen before with another body is refused, so a captured signature
        cannot carry forged events; the same body again is the provider's own retry.
        """
        return None

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """Turn an authentic request into normalized events (send ids may be None)."""
        raise NotImplementedError

    def handle(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
    ) -> list[TrackingEvent]:
        """Verify, check the signed time, then parse: nothing is parsed before the checks.

        With ``time_before_signature`` the signed time is checked before ``verify``.
        """
        try:
            if self.time_before_signature:
                self._check_time(headers, body, now)
                self.verify(headers, body)
            else:
                self.verify(headers, body)
                self._check_time(headers, body, now)
        except WebhookError:
            raise
        except Exception as exc:  # a signature envelope of the wrong shape
            raise WebhookPayloadError(f"unreadable signature fields: {exc!r}") from exc
        try:
            return self.parse(headers, body)
        except WebhookError:
            raise
        except Exception as exc:  # lists for objects, wrong types, huge numbers...
            raise WebhookPayloadError(f"unreadable payload: {exc!r}") from exc

    def _check_time(self, headers: Mapping[str, str], body: bytes, now: datetime | None) -> None:
        signed = self.signed_timestamp(headers, body)
        if signed is None:
            return
        moment = now or datetime.now(UTC)
        if abs(moment - signed) > self.tolerance:
            raise StaleWebhookError(
                f"signed timestamp {signed.isoformat()} is outside the "
                f"{int(self.tolerance.total_seconds())} s tolerance"
            )


class MissingSecretError(ValueError):
    """A handler's secret variable is unset: fatal only where the webhook is served."""


def configure_handlers(engine: Engine, *, served: bool = False) -> None:
    """Validate and hand each handler its ``[plugins.webhooks.<provider>]`` table.

    A table for a provider with no handler, or a bad option, is a ``ConfigError`` naming it.
    A missing secret (``MissingSecretError``) is one only when ``served``: a command that
    does not answer webhooks (send, import, report) needs no webhook secret, and the
    handler stays disabled in it.
    """
    tables = engine.plugin_options("webhooks")
    for provider in tables:
        if provider not in engine.webhook_handlers:
            raise ConfigError(
                f"plugins.webhooks.{provider}: no webhook handler named {provider!r} "
                f"(available: {', '.join(engine.webhook_handlers.names()) or 'none'})"
            )
    for provider in engine.webhook_handlers:
        handler = engine.webhook_handlers.get(provider)
        table = tables.get(provider, {})
        if not isinstance(table, dict):
            raise ConfigError(f"plugins.webhooks.{provider}: must be a table")
        try:
            options = handler.Options.model_validate(table)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = f"plugins.webhooks.{provider}.{where}: {first['msg']}"
            variables = engine.settings.env_variables(f"plugins.webhooks.{provider}.{where}")
            if variables:  # the mistake is in the environment, not in the file
                message += f" (set by {', '.join(variables)})"
            raise ConfigError(message) from None
        try:
            handler.configure(options)
        except MissingSecretError as exc:
            if served:
                raise ConfigError(
                    f"plugins.webhooks.{provider}: {exc}; the server needs it to verify "
                    f"POST /webhooks/{provider} (or remove the table to turn the webhook off)"
                ) from exc
        except ValueError as exc:
            raise ConfigError(f"plugins.webhooks.{provider}: {exc}") from exc


def receive_webhook(
    engine: Engine,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Verify, parse and store one provider request; return (stored, duplicates).

    Raises ``WebhookError`` for a request to refuse; a storage failure propagates, so the
    web app answers 5xx and the provider retries (nothing is acknowledged unstored).
    """
    handler = engine.webhook_handlers.get(provider)
    events = handler.handle(headers, body, now=now)
    try:
        token = handler.single_use_token(headers, body)
    except Exception as exc:
        raise WebhookPayloadError(f"unreadable token: {exc!r}") from exc
    if token is not None:
        _claim_token(engine.db, f"{provider}:token:{token}"[:320], body)
    stored = 0
    for event in events:
        key, extra = dedupe_keys(provider, event)
        stored += record_event(engine, event, dedupe_key=key, also_keys=extra)
    return stored, len(events) - stored


def _claim_token(db: SAEngine, key: str, body: bytes) -> None:
    """Store ``key`` once for ``body``; the same key with another body fails verification."""
    digest = hashlib.sha256(body).hexdigest()
    with session_scope(db) as session:
        row = {"key": key, "digest": digest, "created_at": utcnow()}
        if insert_ignore(session, WebhookReceiptRow, [row]):
            return
        seen = session.get(WebhookReceiptRow, key)
    if seen is None or not same(seen.digest or "", digest):
        raise WebhookVerificationError("token already used with another body")


# -- helpers for handlers -----------------------------------------------------------------
def secret_from_env(variable: str) -> str:
    """The secret in environment variable ``variable``; unset or empty raises
    ``MissingSecretError``, which stops the start-up of whatever serves the webhook."""
    value = os.environ.get(variable)
    if not value:
        raise MissingSecretError(f"environment variable {variable!r} is not set")
    return value


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value; a missing or empty one fails verification, naming it."""
    value = headers.get(name) or headers.get(name.lower())
    if not value:
        raise WebhookVerificationError(f"missing header {name}")
    return value


def same(expected: str | bytes, given: str | bytes) -> bool:
    """Constant-time equality of two secrets (str compared as UTF-8)."""
    a = expected.encode() if isinstance(expected, str) else expected
    b = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def from_epoch(value: Any) -> datetime:
    """Aware UTC from Unix seconds (int, float or digits); anything else is unreadable."""
    if isinstance(value, bool):
        raise WebhookPayloadError(f"not a timestamp: {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise WebhookPayloadError(f"not a timestamp: {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise WebhookPayloadError(f"not a timestamp: {value!r}")
    if not 0 <= value <= _MAX_EPOCH:
        raise WebhookPayloadError(f"timestamp out of range: {value!r}")
    return datetime.fromtimestamp(value, UTC)


def from_iso(value: Any) -> datetime:
    """Aware UTC from an ISO 8601 string ("Z" allowed; naive taken as UTC)."""
    if not isinstance(value, str):
        raise WebhookPayloadError(f"not a timestamp: {value!r}")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Postmark and .NET send seven fractional digits; Python reads at most six.
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise WebhookPayloadError(f"not a timestamp: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def json_body(body: bytes) -> Any:
    """The body as JSON; invalid UTF-8 or JSON is a ``WebhookPayloadError``."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookPayloadError(f"body is not JSON: {exc}") from None


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object; otherwise unreadable, naming ``what``."""
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{what} must be an object, got {type(value).__name__}")
    return value


def optional_str(value: Any, what: str) -> str | None:
    """``value`` when a string (None when absent); any other type is unreadable."""
    if value is None or isinstance(value, str):
        return value
    raise WebhookPayloadError(f"{what} must be a string, got {type(value).__name__}")


# -- deduplication --------------------------------------------------------------------------
def content_key(provider: str, event: TrackingEvent) -> str:
    """A key from what the event says: (message, type, timestamp, URL) for this provider.

    Some providers change an event's id when they retry it, and some send none: this key
    makes those retries duplicates too.
    """
    message = (
        str(event.send_id)
        if event.send_id is not None
        else event.send_ref
        or (event.provider_message_id or "").strip().strip("<>")
        or event.recipient_email
    )
    fields = [
        message,
        EventType(event.type).value,
        event.timestamp.astimezone(UTC).isoformat(),
        event.url,
        (event.recipient_email or "").lower() or None,
    ]
    digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()
    return f"{provider}:sha256:{digest}"


def dedupe_keys(provider: str, event: TrackingEvent) -> tuple[str, list[str]]:
    """The event's stored key (provider id, else content hash) and the extra keys to check."""
    by_content = content_key(provider, event)
    if event.provider_event_id:
        return f"{provider}:{event.provider_event_id}"[:320], [by_content]
    return by_content, []
