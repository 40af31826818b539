"""Status webhooks out: an application subscribes a URL to its triggers' outcomes, and
every outcome becomes one signed POST per matching subscription (Standard Webhooks).

Deliveries are an outbox: ``enqueue`` writes them in the caller's transaction (committed
with the outcome they report, or not at all), ``dispatch_due`` posts the due ones under a
lease (two dispatchers never post one delivery at once), retries a failure after each step
of ``BACKOFF``, and after the last attempt leaves it ``dead``: the dead-letter list, which
``replay`` puts back in line. Every state change of a delivery is made here, guarded on the
state it leaves. The outbound boundary (which URLs, the signature, the POST) is
``engine.feedback.outbound``.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import httpx
from sqlalchemy import Select, delete, insert, or_, select, update
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session

from engine.clock import utcnow
from engine.db import session_scope
from engine.errors import TailormailError
from engine.feedback.outbound import (
    OutboundPolicy,
    PostResult,
    Resolver,
    check_url,
    new_client,
    new_secret,
    post,
    resolve_host,
    signed_headers,
)
from engine.models import WebhookDeliveryRow, WebhookDeliveryStatus, WebhookSubscriptionRow

__all__ = ["OutboundPolicy"]  # re-exported: the settings add_subscription and dispatch take

StatusType = Literal[
    "sent",
    "failed",
    "delivered",
    "bounced",
    "complained",
    "clicked",
    "unsubscribed",
    "cancelled",
    "skipped",
]
EVENT_TYPES: tuple[str, ...] = get_args(StatusType)
"""The outcomes of a trigger a subscription can ask for (the payload's type is
``trigger.<event>``)."""
BACKOFF = tuple(
    timedelta(seconds=s) for s in (5, 30, 120, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600)
)
"""The wait after each failed attempt (the last step repeats if ``max_attempts`` asks for
more); with the default ten attempts, a delivery is retried for about 16 hours."""
LEASE_SLACK = timedelta(seconds=30)
_CHUNK = 500  # ids per DELETE: under every database's limit on bound parameters
DELIVERIES = WebhookDeliveryRow.__table__.c  # type: ignore[attr-defined]
SUBSCRIPTIONS = WebhookSubscriptionRow.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StatusEvent:
    """One outcome of a trigger, to report to the subscriptions that want it."""

    trigger_id: str | None
    campaign: str
    event_type: str
    data: Mapping[str, Any]
    # The API key that made the trigger: a subscription an API key made hears only the
    # triggers of that key (one made on the command line hears every key's).
    key_id: str | None = None


@dataclass(frozen=True)
class _Claimed:
    """A delivery leased to this dispatch, with what posting it needs."""

    id: int
    message_id: str
    payload: dict[str, Any]
    attempts: int
    url: str
    secret: str
    allow_private: bool


@dataclass
class DispatchSummary:
    """What one ``dispatch_due`` did: delivered, to retry, dead-lettered, and deliveries
    another dispatcher took over before this one posted them."""

    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    lost: int = 0

    @property
    def attempted(self) -> int:
        """Deliveries posted (or tried) by this dispatch."""
        return self.delivered + self.retrying + self.dead

    @property
    def claimed(self) -> int:
        """Deliveries this dispatch leased (0: nothing was due)."""
        return self.attempted + self.lost


def add_subscription(
    db: SAEngine,
    url: str,
    *,
    events: Sequence[str] | None = None,
    campaigns: Sequence[str] | None = None,
    key_id: str | None = None,
    allow_private: bool = False,
    policy: OutboundPolicy = OutboundPolicy(),
    resolve: Resolver = resolve_host,
) -> tuple[WebhookSubscriptionRow, str]:
    """Subscribe ``url`` to ``events`` (None or empty: all) of ``campaigns`` (None: all);
    returns the subscription and its signing secret, which is shown once.

    ``allow_private`` lets this subscription reach private addresses (the operator's
    command line only, never an API caller). Raises ``TailormailError`` naming the problem:
    an unknown event, a URL that is not https or whose host is not public.
    """
    chosen = _event_types(events)
    target = check_url(url, policy, allow_private=allow_private, resolve=resolve)
    secret = new_secret()
    row = WebhookSubscriptionRow(
        id=f"wh_{secrets.token_hex(8)}",
        url=str(target.url),
        secret=secret,
        events=chosen,
        key_id=key_id,
        campaigns=sorted(set(campaigns)) if campaigns else None,
        allow_private=allow_private,
    )
    with session_scope(db) as session:
        session.add(row)
    return row, secret


def list_subscriptions(db: SAEngine) -> list[WebhookSubscriptionRow]:
    """Every subscription, newest first, removed ones included (``disabled_at`` set)."""
    with session_scope(db) as session:
        stmt = select(WebhookSubscriptionRow).order_by(SUBSCRIPTIONS.created_at.desc())
        return list(session.scalars(stmt).all())


def remove_subscription(db: SAEngine, sub_id: str) -> WebhookSubscriptionRow:
    """Stop subscription ``sub_id`` at once: it is disabled (kept, so lists show when), its
    secret erased and its deliveries not yet delivered dropped. A second remove changes
    nothing. Raises ``TailormailError`` naming the id when no subscription has it."""
    with session_scope(db) as session:
        row = session.get(WebhookSubscriptionRow, sub_id.strip())
        if row is None:
            raise TailormailError(
                f"no webhook subscription has the id {sub_id!r} (`tailormail subscriptions list`)"
            )
        if row.disabled_at is None:
            row.disabled_at, row.secret = utcnow(), ""
            session.execute(
                delete(WebhookDeliveryRow).where(
                    DELIVERIES.subscription_id == row.id,
                    DELIVERIES.status != WebhookDeliveryStatus.DELIVERED,
                )
            )
        return row


def enqueue(
    session: Session,
    *,
    trigger_id: str | None,
    campaign: str,
    event_type: str,
    data: Mapping[str, Any],
) -> int:
    """Write one pending delivery of this outcome per enabled subscription that wants it,
    in ``session``'s transaction (the caller's); returns how many. ``data`` (JSON values)
    joins ``trigger_id`` and ``campaign`` in the payload's ``data``; it cannot replace them."""
    return enqueue_many(session, [StatusEvent(trigger_id, campaign, event_type, data)])


def enqueue_many(session: Session, events: Iterable[StatusEvent]) -> int:
    """``enqueue`` for a batch of outcomes: one read of the subscriptions, one insert."""
    batch = list(events)
    unknown = sorted({e.event_type for e in batch} - set(EVENT_TYPES))
    if unknown:
        raise TailormailError(f"unknown webhook event {', '.join(unknown)}")
    if not batch:
        return 0
    subscriptions = session.execute(
        select(
            SUBSCRIPTIONS.id, SUBSCRIPTIONS.events, SUBSCRIPTIONS.campaigns, SUBSCRIPTIONS.key_id
        ).where(SUBSCRIPTIONS.disabled_at.is_(None))
    ).all()
    now = utcnow()
    rows = [
        _delivery(sub_id, event, now)
        for event in batch
        for sub_id, wanted, campaigns, key_id in subscriptions
        if (not wanted or event.event_type in wanted)
        and (campaigns is None or event.campaign in campaigns)
        and (key_id is None or key_id == event.key_id)
    ]
    if rows:
        session.execute(insert(WebhookDeliveryRow.__table__), rows)  # type: ignore[attr-defined]
    return len(rows)


def dispatch_due(
    db: SAEngine,
    *,
    limit: int = 100,
    client: httpx.Client | None = None,
    policy: OutboundPolicy = OutboundPolicy(),
    resolve: Resolver = resolve_host,
) -> DispatchSummary:
    """Post up to ``limit`` due deliveries, each under this dispatch's lease; a 2xx answer
    delivers it, anything else schedules the next attempt or, after the last, makes it dead.

    ``client`` is for tests (a client trusting a test CA); by default one is made and closed.
    """
    owner, summary = uuid.uuid4().hex, DispatchSummary()
    claimed = _lease(db, owner, limit, _lease_time(policy))
    if not claimed:
        return summary
    http = client or new_client(policy)
    try:
        for delivery in claimed:
            if not _renew(db, delivery.id, owner, _lease_time(policy)):
                summary.lost += 1
                continue
            result = _attempt(http, delivery, policy, resolve)
            status = _settle(db, delivery, owner, result, policy)
            if status is None:
                summary.lost += 1
            elif status == WebhookDeliveryStatus.DELIVERED:
                summary.delivered += 1
            elif status == WebhookDeliveryStatus.DEAD:
                summary.dead += 1
            else:
                summary.retrying += 1
    finally:
        if client is None:
            http.close()
    return summary


def dead_letters(db: SAEngine, limit: int = 100) -> list[WebhookDeliveryRow]:
    """The dead deliveries (every attempt failed), newest first."""
    with session_scope(db) as session:
        stmt = (
            select(WebhookDeliveryRow)
            .where(DELIVERIES.status == WebhookDeliveryStatus.DEAD)
            .order_by(DELIVERIES.id.desc())
            .limit(limit)
        )
        return list(session.scalars(stmt).all())


def replay(db: SAEngine, which: int | str) -> int:
    """Put dead delivery ``which`` (an id, or ``"all"``) back in line: pending, due now,
    attempts from zero. Returns how many; raises ``TailormailError`` naming an id that is
    unknown, not dead, or of a removed subscription."""
    live = select(SUBSCRIPTIONS.id).where(SUBSCRIPTIONS.disabled_at.is_(None))
    stmt = update(WebhookDeliveryRow).where(
        DELIVERIES.status == WebhookDeliveryStatus.DEAD,
        DELIVERIES.subscription_id.in_(live.scalar_subquery()),
    )
    with session_scope(db) as session:
        if which != "all":
            delivery_id = _delivery_id(which)
            row = session.get(WebhookDeliveryRow, delivery_id)
            if row is None:
                raise TailormailError(f"no webhook delivery has the id {which!r}")
            if row.status != WebhookDeliveryStatus.DEAD:
                raise TailormailError(f"webhook delivery {delivery_id} is {row.status}, not dead")
            stmt = stmt.where(DELIVERIES.id == delivery_id)
        values = {"status": WebhookDeliveryStatus.PENDING, "attempts": 0}
        done = session.execute(stmt.values(next_attempt_at=utcnow(), **values))
        count = int(done.rowcount or 0)  # type: ignore[attr-defined]
    if which != "all" and count == 0:
        raise TailormailError(f"webhook delivery {which} belongs to a removed subscription")
    return count


def forget_triggers(session: Session, trigger_ids: Iterable[str]) -> int:
    """Delete every delivery reporting one of ``trigger_ids`` (their payloads name the
    person), in ``session``'s transaction; returns how many."""
    ids, deleted = list(dict.fromkeys(trigger_ids)), 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        done = session.execute(delete(WebhookDeliveryRow).where(DELIVERIES.trigger_id.in_(chunk)))
        deleted += int(done.rowcount or 0)  # type: ignore[attr-defined]
    return deleted


def purge_older_than(session: Session, cutoff: datetime) -> int:
    """Delete every delivery created before ``cutoff`` (retention), whatever its state."""
    done = session.execute(delete(WebhookDeliveryRow).where(DELIVERIES.created_at < cutoff))
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


def _event_types(events: Sequence[str] | None) -> list[str] | None:
    if not events:
        return None
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise TailormailError(
            f"unknown webhook event {', '.join(unknown)}; use {', '.join(EVENT_TYPES)}"
        )
    return [e for e in EVENT_TYPES if e in events]


def _delivery(subscription_id: str, event: StatusEvent, now: datetime) -> dict[str, Any]:
    reserved = {"trigger_id": event.trigger_id, "campaign": event.campaign}
    data = reserved | {k: v for k, v in event.data.items() if k not in reserved}
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "subscription_id": subscription_id,
        "message_id": f"msg_{secrets.token_hex(16)}",
        "event_type": event.event_type,
        "trigger_id": event.trigger_id,
        "payload": {"type": f"trigger.{event.event_type}", "timestamp": stamp, "data": data},
        "status": WebhookDeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _delivery_id(which: int | str) -> int:
    try:
        return int(which)
    except ValueError:
        raise TailormailError(
            f"a webhook delivery id is a number or 'all', not {which!r}"
        ) from None


def _lease_time(policy: OutboundPolicy) -> timedelta:
    """Long enough for one POST: connect, send and read, each bounded by the timeout."""
    return timedelta(seconds=3 * policy.timeout_seconds) + LEASE_SLACK


def _with_subscription(*columns: Any) -> Select[Any]:
    """``SELECT columns`` of deliveries joined to their subscriptions."""
    on = SUBSCRIPTIONS.id == DELIVERIES.subscription_id
    return select(*columns).join_from(WebhookDeliveryRow, WebhookSubscriptionRow, on)


def _free(now: datetime) -> Any:
    return or_(DELIVERIES.lease_expires.is_(None), DELIVERIES.lease_expires < now)


def _lease(db: SAEngine, owner: str, limit: int, length: timedelta) -> list[_Claimed]:
    """Lease the due deliveries of live subscriptions to ``owner`` in one UPDATE guarded on
    their state and lease (two dispatchers at once: each row goes to one of them), then
    read back what ``owner`` got, with its subscription's URL and secret."""
    now = utcnow()
    live = SUBSCRIPTIONS.disabled_at.is_(None)
    pending = DELIVERIES.status == WebhookDeliveryStatus.PENDING
    due = (
        _with_subscription(DELIVERIES.id)
        .where(pending, DELIVERIES.next_attempt_at <= now, _free(now), live)
        .order_by(DELIVERIES.next_attempt_at, DELIVERIES.id)
        .limit(limit)
    )
    with session_scope(db) as session:
        leased = session.execute(
            update(WebhookDeliveryRow)
            .where(DELIVERIES.id.in_(due.scalar_subquery()), pending, _free(now))
            .values(lease_owner=owner, lease_expires=now + length)
        )
        if not leased.rowcount:  # type: ignore[attr-defined]
            return []  # nothing due: one statement per idle tick
    columns = (DELIVERIES.id, DELIVERIES.message_id, DELIVERIES.payload, DELIVERIES.attempts)
    mine = (
        _with_subscription(
            *columns, SUBSCRIPTIONS.url, SUBSCRIPTIONS.secret, SUBSCRIPTIONS.allow_private
        )
        .where(DELIVERIES.lease_owner == owner, pending)
        .order_by(DELIVERIES.next_attempt_at, DELIVERIES.id)
    )
    with db.connect() as connection:
        return [_Claimed(*row) for row in connection.execute(mine).all()]


def _renew(db: SAEngine, delivery_id: int, owner: str, length: timedelta) -> bool:
    """Extend ``owner``'s lease on one delivery just before posting it; False when another
    dispatcher took it over meanwhile (its lease ran out while earlier ones were posted)."""
    return _if_still_leased(db, delivery_id, owner, lease_expires=utcnow() + length)


def _attempt(
    client: httpx.Client, delivery: _Claimed, policy: OutboundPolicy, resolve: Resolver
) -> PostResult:
    """One attempt: check the URL again (DNS may have changed), sign, POST."""
    try:
        target = check_url(
            delivery.url, policy, allow_private=delivery.allow_private, resolve=resolve
        )
    except TailormailError as exc:
        return PostResult(None, str(exc))
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = signed_headers(delivery.secret, delivery.message_id, body, utcnow())
    return post(client, target, body, headers, policy)


def _settle(
    db: SAEngine, delivery: _Claimed, owner: str, result: PostResult, policy: OutboundPolicy
) -> str | None:
    """Record an attempt and release the lease: delivered, pending again after the next
    backoff step, or dead after the last attempt. None when the lease was lost."""
    now, attempts = utcnow(), delivery.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": result.status_code,
        "last_error": result.error[:500] if result.error else None,
        "lease_owner": None,
        "lease_expires": None,
    }
    if result.delivered:
        values |= {"status": WebhookDeliveryStatus.DELIVERED, "delivered_at": now}
    elif attempts >= policy.max_attempts:
        values |= {"status": WebhookDeliveryStatus.DEAD}
    else:
        step = BACKOFF[min(attempts, len(BACKOFF)) - 1]
        values |= {"status": WebhookDeliveryStatus.PENDING, "next_attempt_at": now + step}
    settled = _if_still_leased(db, delivery.id, owner, **values)
    return str(values["status"]) if settled else None


def _if_still_leased(db: SAEngine, delivery_id: int, owner: str, **values: Any) -> bool:
    """Set ``values`` on a pending delivery while ``owner`` holds its lease; whether it did."""
    with session_scope(db) as session:
        done = session.execute(
            update(WebhookDeliveryRow)
            .where(
                DELIVERIES.id == delivery_id,
                DELIVERIES.lease_owner == owner,
                DELIVERIES.status == WebhookDeliveryStatus.PENDING,
            )
            .values(**values)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]
