"""SQLModel tables. Timestamps are time-zone aware UTC everywhere (SQLModel stores them as
UTC and gives them back aware, on SQLite as on PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Index,
    LargeBinary,
    Text,
    UniqueConstraint,
    case,
    cast,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.sql.elements import Label
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from engine.clock import as_utc, utcnow

__all__ = ["as_utc", "utcnow"]  # re-exported: the engine's one clock (engine.clock)


class Table(SQLModel):
    """The base of every table: pydantic builds a table's validator only when something
    validates one (rows are built and read without it), which keeps start-up quick."""

    model_config = SQLModelConfig(from_attributes=True, defer_build=True)


class LedgerStatus:
    """States of a ledger row; ``engine.ledger`` owns every change (see its state diagram)."""

    SKIPPED = "skipped"
    # A triggered alert decided now, to be sent at ``release_at`` (``engine.sending.release``).
    SCHEDULED = "scheduled"
    PENDING = "pending"  # claimed under a worker's lease, not yet handed to the transport
    HANDED_OVER = "handed_over"  # with the transport: the only ambiguous moment
    SENT = "sent"
    DEFERRED = "deferred"  # a temporary failure: it did not leave; resuming the run retries it
    FAILED = "failed"
    UNKNOWN = "unknown"


class FailureClass:
    """Why a ``failed`` ledger row failed, so a resumed run knows which ones to retry."""

    FIXABLE = "fixable"  # never left (rendering, configuration): retried when the run resumes
    # A row whose ``failure`` is empty failed for good: the recipient's server refused it.


class RecipientRow(Table, table=True):
    """A person who may receive alerts."""

    __tablename__ = "recipients"
    id: str = Field(primary_key=True, max_length=200)
    email: str = Field(index=True, max_length=320)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class ItemRow(Table, table=True):
    """A catalogue item alerts can show."""

    __tablename__ = "items"
    id: str = Field(primary_key=True, max_length=200)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class InteractionRow(Table, table=True):
    """A user's interaction with an item; the recipes learn from these."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_user_time", "user_id", "timestamp"),
        # One ``email_click`` per send and item, however often it is clicked (imported
        # interactions have no send, and NULLs never collide).
        UniqueConstraint("send_id", "item_id", name="uq_interactions_send_item"),
    )
    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=200)
    item_id: str = Field(index=True, max_length=200)
    timestamp: datetime = Field(index=True)
    value: float = 1.0
    kind: str = Field(default="interaction", max_length=64)
    send_id: int | None = None  # the email an ``email_click`` came from


class CampaignRow(Table, table=True):
    """The last-seen configuration of a campaign (campaigns live in config as code)."""

    __tablename__ = "campaigns"
    name: str = Field(primary_key=True, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    updated_at: datetime = Field(default_factory=utcnow)


class VariantRow(Table, table=True):
    """A campaign's variant as it was configured when last synced."""

    __tablename__ = "variants"
    campaign: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=64)
    subject: str
    template: str
    features: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class RunRow(Table, table=True):
    """One execution of a campaign; the id is stable for a schedule tick, so refiring resumes."""

    __tablename__ = "runs"
    id: str = Field(primary_key=True, max_length=200)
    campaign: str = Field(index=True, max_length=64)
    scheduled_for: datetime | None = None
    status: str = Field(default="running", max_length=20)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    error: str | None = None  # why a failed run stopped
    # The model every worker of the run decides with ("" = a fresh policy), pinned at start.
    model_version: str | None = Field(default=None, max_length=64)
    shards: int | None = None  # how many shards worker processes sent (None: one process)
    # Renewed by every worker of the run with its lease: a running run whose heartbeat is
    # older than a lease has no live worker (it was killed), so another run may start.
    heartbeat_at: datetime | None = None
    # The variants as offered (``engine.variants``), pinned by the run's first decision:
    # its ledger rows leave ``offered`` empty when they were offered these (the rule), so
    # each row does not carry the same list again.
    offered: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))


DECISION_FIELDS = (
    "variant",
    "probability",
    "pmf",
    "offered",
    "context",
    "policy",
    "model_version",
    "items",
    "arm",
    "shadow",
)
"""The ledger columns of a decision as logged (a skipped row has them all empty)."""


def _present(column: str) -> Index:
    """The index ``ix_ledger_<column>`` of the rows where ``column`` is set (partial)."""
    where = text(f"{column} IS NOT NULL")
    return Index(f"ix_ledger_{column}", column, sqlite_where=where, postgresql_where=where)


OTHER_MESSAGE_ID = (
    "message_id IS NOT NULL"
    " AND (send_ref IS NULL OR substr(message_id, 1, 34) <> '<' || send_ref || '@')"
)
"""The rows whose Message-ID is not ``<send_ref@domain>`` (the one tailormail makes, 32
characters of reference, ``engine.identifiers``): a plugin's own, or from before send
references. Only they are in ``ix_ledger_message_id``; ours are found by reference. A
lookup must repeat this condition word for word for the index to serve it."""


class LedgerRow(Table, table=True):
    """The send ledger: one row per (run, recipient), written before the message leaves."""

    __tablename__ = "ledger"
    __table_args__ = (
        # Also the index of a run's rows (its first column): no index on run_id alone. A
        # scheduled run's rows have no trigger id (""): one row per recipient; a trigger
        # run has one per trigger (``engine.sending.triggers``).
        UniqueConstraint(
            "run_id", "recipient_id", "trigger_id", name="uq_ledger_run_recipient_trigger"
        ),
        # The rows waiting for their release time: only those are in it.
        Index(
            "ix_ledger_release",
            "release_at",
            sqlite_where=text("status = 'scheduled'"),
            postgresql_where=text("status = 'scheduled'"),
        ),
        Index("ix_ledger_campaign_status_sent", "campaign", "status", "sent_at"),
        # A row gets these ids only when handed over (and answered): a claimed row adds no
        # entry, and lookups by value (``=``, ``IN``) use them all the same.
        *(_present(name) for name in ("send_ref", "provider_id")),
        # A Message-ID tailormail made is its send reference's: the send_ref index finds it.
        Index(
            "ix_ledger_message_id",
            "message_id",
            sqlite_where=text(OTHER_MESSAGE_ID),
            postgresql_where=text(OTHER_MESSAGE_ID),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=200)
    campaign: str = Field(max_length=64)
    recipient_id: str = Field(index=True, max_length=200)
    email: str = Field(max_length=320)
    # Derived from (run_id, recipient_id), or from the trigger id, whose keys guard it.
    decision_id: str = Field(max_length=64)
    # The trigger this row sends (``triggers.id``); "" in a scheduled run.
    trigger_id: str = Field(default="", max_length=40, sa_column_kwargs={"server_default": ""})
    status: str = Field(max_length=20)
    # When a ``scheduled`` row is due (a triggered alert sent later).
    release_at: datetime | None = None
    skip_reason: str | None = Field(default=None, max_length=200)
    variant: str | None = Field(default=None, max_length=64)
    probability: float | None = None
    pmf: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    # The variants as offered (key, subject, template, features): learning and evaluation
    # see the action set as it was, whatever the campaign file says today. None: the
    # run's (``RunRow.offered``), or, for rows older than both, not known.
    offered: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    context: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    policy: str | None = Field(default=None, max_length=64)
    model_version: str | None = Field(default=None, max_length=64)
    items: list[str] | None = Field(default=None, sa_column=Column(JSON))
    # "control" (held out: the baseline acts) or "treatment"; None without a control group.
    arm: str | None = Field(default=None, max_length=20)
    # Apprentice mode: the policy's own choice (variant, probability, pmf, policy,
    # model_version), logged while the baseline acted.
    shadow: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    links: list[str] | None = Field(default=None, sa_column=Column(JSON))
    # Per link index: ``[item_id, position]`` for a link made by ``item_url``, else null.
    link_items: list[list[Any] | None] | None = Field(default=None, sa_column=Column(JSON))
    # Indexed: a provider event may name the send only by our Message-ID.
    message_id: str | None = Field(default=None, max_length=320)
    # The keyed reference that leaves in headers and provider metadata (engine.identifiers);
    # stored, so a provider event joins whatever the secret is now.
    send_ref: str | None = Field(default=None, max_length=64)
    # The provider's own id of the message; None when it answered with our Message-ID
    # (SMTP does), which ``message_id`` holds already.
    provider_id: str | None = Field(default=None, max_length=320)
    error: str | None = None
    # ``FailureClass.FIXABLE`` for a failed row whose message never left; else empty.
    failure: str | None = Field(default=None, max_length=20)
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    # The worker holding a pending or handed-over row ("<host>/<tag>") and until when.
    owner: str | None = Field(default=None, index=True, max_length=200)
    lease_expires: datetime | None = None


class TriggerRow(Table, table=True):
    """An alert an application triggered over the API (``engine.sending.triggers``): what
    it asked for, kept so the release renders it and ``GET /v1/triggers/{id}`` answers.

    Its ledger row (``send_id``, with ``trigger_id``) holds the decision and the outcome.
    """

    __tablename__ = "triggers"
    __table_args__ = (
        # The caller's own event id makes a repeated event one trigger (per campaign).
        UniqueConstraint("campaign", "event_id", name="uq_triggers_campaign_event"),
    )
    id: str = Field(primary_key=True, max_length=40)  # trg_<ULID>
    campaign: str = Field(max_length=64)
    run_id: str = Field(max_length=200)
    recipient_id: str = Field(index=True, max_length=200)
    event_id: str | None = Field(default=None, max_length=200)
    digest: str = Field(max_length=64)  # of the trigger as asked: a repeat must match it
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    items: list[str] | None = Field(default=None, sa_column=Column(JSON))
    send_at: datetime | None = None
    key_id: str | None = Field(default=None, max_length=32)
    send_id: int | None = None
    answer: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class IdempotencyRow(Table, table=True):
    """An ``Idempotency-Key`` an API key used, with the request's digest and the answer
    it got (None while the first request is still being answered: a repeat then is 409)."""

    __tablename__ = "idempotency_keys"
    key_id: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=255)
    digest: str = Field(max_length=64)
    status_code: int | None = None
    answer: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class EventRow(Table, table=True):
    """A stored tracking or provider event; ``dedupe_key`` makes webhook retries harmless."""

    __tablename__ = "events"
    id: int | None = Field(default=None, primary_key=True)
    send_id: int | None = Field(default=None, index=True)
    type: str = Field(max_length=20)
    timestamp: datetime
    dedupe_key: str | None = Field(default=None, unique=True, max_length=320)
    url: str | None = None
    user_agent: str | None = None
    bot: bool = False
    machine: bool = False
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class RewardRow(Table, table=True):
    """The reward of one decision, computed once its attribution window closed."""

    __tablename__ = "rewards"
    send_id: int = Field(primary_key=True)
    campaign: str = Field(index=True, max_length=64)
    reward: float
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    computed_at: datetime = Field(default_factory=utcnow)
    learned_by: str | None = Field(default=None, max_length=64)


class ModelVersionRow(Table, table=True):
    """A saved policy model and its audit record; workers load the campaign's champion.

    Every training writes one row, promoted or not: what it was (``kind``: online update,
    challenger, settings change, rollback), the settings it was trained with, the ledger
    range it learned from, the off-policy estimates that decided it, the decision and why.
    """

    __tablename__ = "model_versions"
    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(index=True, max_length=64)
    version: str = Field(unique=True, max_length=64)
    policy: str = Field(max_length=64)
    role: str = Field(default="champion", max_length=20)
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    n_feedback: int = 0
    parent: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    kind: str | None = Field(default=None, max_length=20)
    settings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # The campaign file's policy settings when this row was written: a change is noticed.
    config_settings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    data_first_id: int | None = None
    data_last_id: int | None = None
    data_from: datetime | None = None
    data_to: datetime | None = None
    n_eval: int = 0
    estimates: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    decision: str | None = Field(default=None, max_length=40)
    reason: str | None = None
    pinned: bool = False


class SuppressionRow(Table, table=True):
    """An address that must get no further mail (unsubscribe, complaint, hard bounce)."""

    __tablename__ = "suppressions"
    email: str = Field(primary_key=True, max_length=320)
    reason: str = Field(max_length=40)
    send_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ForgottenAddressRow(Table, table=True):
    """An address erased with ``tailormail forget``, kept only as a keyed hash so that
    nobody mails it again (see ``engine.audience.forgetting``)."""

    __tablename__ = "forgotten_addresses"
    address_hash: str = Field(primary_key=True, max_length=80)
    forgotten_at: datetime = Field(default_factory=utcnow)


class ProjectKeyRow(Table, table=True):
    """A key the database keeps for itself, independent of the link secret (the key of
    forgotten addresses' hashes: see ``engine.audience.forgetting_key``)."""

    __tablename__ = "project_keys"
    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=128)  # hex
    created_at: datetime = Field(default_factory=utcnow)


class CampaignSuppressionRow(Table, table=True):
    """An address that asked for no more mail from one campaign (other campaigns still send)."""

    __tablename__ = "campaign_suppressions"
    email: str = Field(primary_key=True, max_length=320)
    campaign: str = Field(primary_key=True, max_length=64)
    send_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class RecipeFitRow(Table, table=True):
    """A fitted recipe, pickled, keyed by recipe, parameters and the data it was fitted on.

    A run reuses the row whose fingerprint matches the interactions, items and recipients
    it sees, so a recipe is refitted only when that data changed.
    """

    __tablename__ = "recipe_fits"
    __table_args__ = (
        UniqueConstraint("recipe", "params_digest", "fingerprint", name="uq_recipe_fits_key"),
    )
    id: int | None = Field(default=None, primary_key=True)
    recipe: str = Field(max_length=64)
    params_digest: str = Field(max_length=64)
    fingerprint: str = Field(max_length=64)
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    fit_seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class RunRecipeFitRow(Table, table=True):
    """Which stored fit a run recommends from: the first worker of the run decides."""

    __tablename__ = "run_recipe_fits"
    run_id: str = Field(primary_key=True, max_length=200)
    fit_id: int = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class WebhookReceiptRow(Table, table=True):
    """A key a webhook request has used: an event's content key, or a single-use token.

    ``digest`` (a token's) is the hash of the body it first came with, so a provider's
    retry of the same request passes and a captured token on another body does not.
    """

    __tablename__ = "webhook_receipts"
    key: str = Field(primary_key=True, max_length=320)
    digest: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class CampaignPauseRow(Table, table=True):
    """A campaign that paused itself (complaint or hard-bounce rate over its threshold).

    The pause holds while ``resumed_at`` is empty; after a resume, the rates are counted
    again over the sends made since then, so old complaints do not pause it at once.
    """

    __tablename__ = "campaign_pauses"
    campaign: str = Field(primary_key=True, max_length=64)
    reason: str
    metric: str = Field(max_length=40)
    rate: float
    sends: int
    paused_at: datetime = Field(default_factory=utcnow)
    resumed_at: datetime | None = None


class SchedulerLeaseRow(Table, table=True):
    """The scheduler leader's lease (databases without advisory locks): one row per lock."""

    __tablename__ = "scheduler_leases"
    name: str = Field(primary_key=True, max_length=64)
    owner: str = Field(max_length=200)
    expires_at: datetime
    acquired_at: datetime


class ApiKeyRow(Table, table=True):
    """A key of the HTTP API (``tailormail keys``): stored as the SHA-256 of its secret part,
    never the key itself, with what it may do (scopes) and, optionally, on which campaigns.

    A key is 256 random bits, not a password: a fast hash is enough to make a stolen table
    useless, and lets every request check its key in microseconds.
    """

    __tablename__ = "api_keys"
    id: str = Field(primary_key=True, max_length=32)  # the key's public part, shown in lists
    name: str = Field(max_length=64)
    secret_hash: str = Field(max_length=64)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    campaigns: list[str] | None = Field(default=None, sa_column=Column(JSON))  # None: all
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class ErasureRow(Table, table=True):
    """That a ``forget`` (or ``forget --compact``) happened, when, and how much it erased;
    it names nobody (see ``engine.audience.forgetting``)."""

    __tablename__ = "erasures"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=20)  # "forget" or "compact"
    erased_at: datetime = Field(default_factory=utcnow)
    recipients: int = 0
    addresses: int = 0
    ledger_rows: int = 0
    events: int = 0
    interactions: int = 0
    suppressions: int = 0
    files: int = 0  # files deleted or rewritten (outbox copies, previews, exports, logs)
    # Whether the SQLite WAL was truncated (no old page images left); None on PostgreSQL.
    compacted: bool | None = None


class PersonalFileRow(Table, table=True):
    """A file tailormail wrote that holds people's data, so ``forget`` finds it again:
    a preview or a test copy (``holder``: the keyed hash of the address it was rendered
    for), an export (``holder`` None: many people), an outbox folder (``kind`` outbox)."""

    __tablename__ = "personal_files"
    path: str = Field(primary_key=True, max_length=1024)
    kind: str = Field(max_length=20)
    holder: str | None = Field(default=None, index=True, max_length=80)
    written_at: datetime = Field(default_factory=utcnow)


def row_offered() -> Label[Any]:
    """A ledger row's offered variants as a column (``offered``): its own, else its run's
    (rows offered what their run pinned keep none of their own, ``RunRow.offered``)."""
    ledger, runs = LedgerRow.__table__.c, RunRow.__table__.c  # type: ignore[attr-defined]
    of_run = select(runs.offered).where(runs.id == ledger.run_id).scalar_subquery()
    # A JSON column stores None as JSON's null (not SQL's NULL): both mean "none here".
    none = or_(ledger.offered.is_(None), cast(ledger.offered, Text) == "null")
    return type_coerce(case((none, of_run), else_=ledger.offered), JSON).label("offered")


class WebhookSubscriptionRow(Table, table=True):
    """A URL an application subscribed to its triggers' outcomes (status webhooks out,
    ``engine.feedback.status_webhooks``). The ``whsec_`` secret is stored as is, not hashed:
    tailormail signs every delivery with it (docs/security.md, "Outbound status webhooks")."""

    __tablename__ = "webhook_subscriptions"
    id: str = Field(primary_key=True, max_length=32)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=128)  # emptied when the subscription is removed
    events: list[str] | None = Field(default=None, sa_column=Column(JSON))  # None: all
    key_id: str | None = Field(default=None, max_length=32)  # None: made from the CLI
    campaigns: list[str] | None = Field(default=None, sa_column=Column(JSON))  # None: all
    allow_private: bool = False  # the operator allowed a private address (CLI only)
    created_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None


class WebhookDeliveryStatus:
    """States of a status webhook delivery; ``engine.feedback.status_webhooks`` owns them."""

    PENDING = "pending"  # due at ``next_attempt_at`` (leased while a dispatcher posts it)
    DELIVERED = "delivered"
    DEAD = "dead"  # every attempt failed: the dead-letter list, replayable


_PENDING_DELIVERY = text("status = 'pending'")


class WebhookDeliveryRow(Table, table=True):
    """One status webhook message to one subscription (an outbox row): written in the
    transaction that records the outcome, posted later by ``dispatch_due``."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=_PENDING_DELIVERY,
            postgresql_where=_PENDING_DELIVERY,
        ),
        UniqueConstraint("message_id", name="uq_webhook_deliveries_message_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    subscription_id: str = Field(max_length=32, index=True)
    message_id: str = Field(max_length=40)  # webhook-id: the same on every retry
    event_type: str = Field(max_length=20)
    trigger_id: str | None = Field(default=None, max_length=64, index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    status: str = Field(default=WebhookDeliveryStatus.PENDING, max_length=10, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = Field(default=None, max_length=500)
    last_status_code: int | None = None
    lease_owner: str | None = Field(default=None, max_length=40)
    lease_expires: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
