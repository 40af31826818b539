"""What the HTTP API accepts and answers, as pydantic models: they validate requests and
are the source of the OpenAPI 3.1 document (``engine.web.api_openapi``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.addresses import normalize_address
from engine.feedback.status_webhooks import StatusType
from engine.sending.triggers import MAX_BATCH

Scalar = str | int | float | bool
ItemId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
MAX_DATA_BYTES = 32 * 1024
"""The largest event data one trigger may carry, as compact JSON."""
_ID = r"^[^\x00-\x1f\x7f]{1,200}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RecipientIn(_Model):
    """Who gets the alert: an id, plus an email and attributes to store (upserted)."""

    id: str = Field(pattern=_ID, description="The recipient's id in your application.")
    email: str | None = Field(
        default=None,
        max_length=320,
        description="Required the first time a recipient is seen; updates it when given.",
    )
    attributes: dict[str, Scalar | None] = Field(
        default_factory=dict,
        max_length=100,
        description="Merged into the recipient's stored attributes.",
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else normalize_address(value)

    @field_validator("attributes")
    @classmethod
    def _keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or len(key) > 64 or not key.isprintable() or key in ("id", "email"):
                raise ValueError(f"attribute name {key!r}: 1 to 64 printable characters")
        return {k: v for k, v in value.items() if v is not None}


class TriggerIn(_Model):
    """One triggered alert."""

    recipient: RecipientIn
    data: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "What happened: templates see it as `event`; the keys the campaign's "
            "[trigger] context lists are also the policy's context. Links in it are "
            "text, never tracked, unless a template passes them to track_url() and "
            "their host is on the campaign's link_hosts."
        ),
    )
    items: list[ItemId] | None = Field(
        default=None,
        max_length=100,
        description="Catalogue item ids to feature (else the campaign's recipe picks).",
    )
    send_at: datetime | None = Field(
        default=None, description="When to send (RFC 3339 with an offset); absent: now."
    )
    event_id: str | None = Field(
        default=None,
        pattern=_ID,
        description="Your id of the event: a repeat with the same id is the same trigger.",
    )

    @field_validator("data")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), default=str))
        if size > MAX_DATA_BYTES:
            raise ValueError(f"is {size} bytes as JSON; the limit is {MAX_DATA_BYTES}")
        return value

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time-zone offset (2026-12-08T09:00:00Z)")
        return value

    @field_validator("items")
    @classmethod
    def _item_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for item in value:
                if not 0 < len(item) <= 200 or not item.isprintable():
                    raise ValueError(f"item id {item[:40]!r}: 1 to 200 printable characters")
        return value


class TriggerRequestIn(TriggerIn):
    """``POST /v1/campaigns/{name}/trigger``'s body."""

    dry_run: bool = Field(
        default=False,
        description="Decide and render, and answer with the message; nothing is stored or sent.",
    )


class BatchIn(_Model):
    """``POST /v1/campaigns/{name}/triggers``'s body."""

    triggers: list[TriggerIn] = Field(min_length=1, max_length=MAX_BATCH)
    dry_run: bool = False


class RenderedOut(_Model):
    """The message a dry run would send."""

    subject: str
    to: str
    html: str
    text: str


class EventOut(_Model):
    """Something that happened to a sent alert."""

    type: str
    at: datetime


class TriggerOut(_Model):
    """A trigger's decision and, when read back, its outcome."""

    trigger_id: str
    decision_id: str
    campaign: str
    recipient_id: str
    event_id: str | None
    status: Literal[
        "queued",
        "scheduled",
        "skipped",
        "sending",
        "retrying",
        "sent",
        "failed",
        "unknown",
        "dry_run",
    ]
    reason: str | None = Field(description="Why it was skipped or failed.")
    variant: str | None = Field(description="The variant the policy chose.")
    probability: float | None = Field(description="The probability it was chosen with.")
    model_version: str | None
    items: list[str]
    send_at: datetime
    would_be: str | None = None
    message: RenderedOut | None = None
    sent_at: datetime | None = None
    events: list[EventOut] | None = None
    created_at: datetime | None = None


class BatchOut(_Model):
    """A batch's answers, in the order of its triggers."""

    triggers: list[TriggerOut]


class ErrorBody(_Model):
    """One refusal: a stable ``code``, a sentence, and (in a batch) the trigger's index."""

    code: str
    message: str
    index: int | None = None


class ErrorOut(_Model):
    """Every refusal's body."""

    error: ErrorBody


class SubscriptionIn(_Model):
    """``POST /v1/subscriptions``'s body: where to post the outcomes of this key's triggers."""

    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://",
        description="An https URL on a public address (private ones are refused).",
    )
    events: list[StatusType] | None = Field(
        default=None, max_length=9, description="The outcomes to hear (absent: all)."
    )
    campaigns: list[str] | None = Field(
        default=None, max_length=100, description="Only these campaigns (absent: the key's)."
    )


class SubscriptionOut(_Model):
    """A subscription (its secret only in the answer that made it)."""

    id: str
    url: str
    events: list[str] | None
    campaigns: list[str] | None
    created_at: datetime
    secret: str | None = Field(
        default=None, description="The whsec_ signing secret: shown once, when made."
    )


class SubscriptionsOut(_Model):
    """The key's subscriptions."""

    subscriptions: list[SubscriptionOut]


class DeadLetterOut(_Model):
    """A status webhook every attempt of which failed."""

    id: int
    subscription_id: str
    event_type: str
    trigger_id: str | None
    attempts: int
    last_error: str | None
    last_status_code: int | None
    created_at: datetime


class DeadLettersOut(_Model):
    """The key's dead letters, newest first."""

    dead_letters: list[DeadLetterOut]
