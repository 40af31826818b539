"""Storing tracking and provider events, and suppressing addresses that asked for no mail.

Every event lands in ``events`` once: a ``dedupe_key`` (the provider's event id, say) makes
webhook retries harmless. An unsubscribe, a complaint or a hard bounce suppresses the
recipient's address in the same transaction, so the very next run already skips them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, text
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session, col

from engine.db import insert_ignore, insert_returning, session_scope
from engine.feedback.trigger_events import report_trigger_events
from engine.identifiers import is_send_ref
from engine.ledger.reconcile import settle_unknown
from engine.models import (
    OTHER_MESSAGE_ID,
    CampaignSuppressionRow,
    EventRow,
    LedgerRow,
    LedgerStatus,
    SuppressionRow,
    WebhookReceiptRow,
    as_utc,
    utcnow,
)
from engine.recommendation.clicks import store_email_clicks
from engine.types import EventType, TrackingEvent

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)

# Event fields with no column of their own travel in ``data`` under these reserved keys.
_META_KEYS = {
    "provider_event_id": "_provider_event_id",
    "provider_message_id": "_provider_message_id",
    "recipient_email": "_recipient_email",
}
_ALWAYS_SUPPRESS = {EventType.UNSUBSCRIBE, EventType.COMPLAINT}
_CHUNK = 500  # keeps IN (...) lists well below every database's bound-parameter limit


def suppression_reason(event: TrackingEvent) -> str | None:
    """Why ``event`` must stop further mail to its recipient, or None when it need not."""
    kind = EventType(event.type)  # handlers may have passed the plain string
    if kind in _ALWAYS_SUPPRESS:
        return kind.value
    if kind == EventType.BOUNCE and event.data.get("bounce_type") == "hard":
        return "hard_bounce"
    return None


def unknown_outcome(event: TrackingEvent) -> str | None:
    """What ``event`` proves about a send whose outcome was unknown, or None.

    Any sign that the message reached the provider or the reader (delivered, deferred by
    the receiving server, opened, clicked, a soft bounce, a complaint, an unsubscribe) makes
    it ``sent``; a hard bounce makes it ``failed``.
    """
    if suppression_reason(event) == "hard_bounce":
        return LedgerStatus.FAILED
    return LedgerStatus.SENT


def _settle_unknown(session: Session, found: Sequence[tuple[int, TrackingEvent]]) -> None:
    """Let these stored events settle the sends still ``unknown`` (a ledger transition)."""
    outcomes = [(send_id, unknown_outcome(e), e.timestamp) for send_id, e in found]
    settle_unknown(session, [(i, status, at) for i, status, at in outcomes if status])


def _provider_id_spellings(provider_message_id: str) -> list[str]:
    # Providers report Message-IDs with or without the angle brackets the ledger may hold.
    bare = provider_message_id.strip().strip("<>")
    return sorted({provider_message_id, bare, f"<{bare}>"})


def _find_send(session: Session, event: TrackingEvent) -> LedgerRow | None:
    """The ledger row ``event`` is about: by send id (tracking links, and provider events
    of mail sent before keyed references), by the keyed send reference the provider
    echoed, else by the provider's message id."""
    if event.send_id is not None:
        row = session.get(LedgerRow, event.send_id)
        if row is not None:
            return row
    if event.send_ref:
        stmt = select(LedgerRow).where(col(LedgerRow.send_ref) == event.send_ref).limit(1)
        row = session.scalars(stmt).first()
        if row is not None:
            return row
    if event.provider_message_id:
        spellings = _provider_id_spellings(event.provider_message_id)
        # The provider's own id, or a Message-ID (all an unknown send has: no answer came):
        # one tailormail made is its reference's (``<ref@domain>``), any other is indexed.
        refs = [
            ref for ref in {s.strip("<>").partition("@")[0] for s in spellings} if is_send_ref(ref)
        ]
        stmt = (
            select(LedgerRow)
            .where(
                or_(
                    col(LedgerRow.provider_id).in_(spellings),
                    and_(col(LedgerRow.message_id).in_(spellings), text(OTHER_MESSAGE_ID)),
                    col(LedgerRow.send_ref).in_(refs),
                )
            )
            .order_by(col(LedgerRow.id))
            .limit(1)
        )
        return session.scalars(stmt).first()
    return None


def _event_values(
    event: TrackingEvent, send_id: int | None, dedupe_key: str | None
) -> dict[str, Any]:
    data = dict(event.data)
    for field, key in _META_KEYS.items():
        value = getattr(event, field)
        if value is not None:
            data[key] = value
    return {
        "send_id": send_id,
        "type": EventType(event.type).value,
        "timestamp": as_utc(event.timestamp),
        "dedupe_key": dedupe_key,
        "url": event.url,
        "user_agent": event.user_agent,
        "bot": event.bot,
        "machine": event.machine,
        "data": data,
        "created_at": utcnow(),
    }


def _suppression(email: str, send_id: int | None, **scope: str) -> dict[str, Any]:
    """A suppression row of ``email``: with ``reason=`` for every campaign, with
    ``campaign=`` for that campaign only."""
    return {"email": email.strip().lower(), "send_id": send_id, "created_at": utcnow(), **scope}


def _write(
    session: Session, events: Sequence[dict[str, Any]], suppressions: Sequence[dict[str, Any]]
) -> set[str | None]:
    """The one write path of events and suppressions, in the caller's transaction.

    An event whose dedupe key is already stored is skipped, as is a suppression already
    there; returns the dedupe keys of the events that landed.
    """
    landed = {key for (key,) in insert_returning(session, EventRow, events, "dedupe_key")}
    insert_ignore(session, SuppressionRow, [s for s in suppressions if "campaign" not in s])
    insert_ignore(session, CampaignSuppressionRow, [s for s in suppressions if "campaign" in s])
    report_trigger_events(session, [e for e in events if e["dedupe_key"] in landed])
    return landed


def record_event(
    engine: Engine,
    event: TrackingEvent,
    *,
    dedupe_key: str | None = None,
    also_keys: Sequence[str] = (),
) -> bool:
    """Store ``event``; return False when ``dedupe_key`` was already stored (a duplicate).

    ``also_keys`` are further keys that make the event a duplicate when any was seen before
    (a webhook event's content key, for providers that change event ids on retry).

    An event whose ``send_id`` is not in the ledger is matched by ``provider_message_id``.
    Unsubscribes, complaints and hard bounces suppress the send's address (or, for a
    provider event matching no send, ``recipient_email``) in the same transaction. After
    the commit the ``tracking_event`` hook sees the stored event (with the resolved send id).
    """
    reason = suppression_reason(event)
    with session_scope(engine.db) as session:
        row = _find_send(session, event)
        send_id = row.id if row is not None else event.send_id
        receipts = [{"key": key, "created_at": utcnow()} for key in also_keys]
        fresh = insert_ignore(session, WebhookReceiptRow, receipts) == len(receipts)
        email = row.email if row is not None else event.recipient_email
        # Suppress even on a duplicate: honouring an unsubscribe twice is harmless, and a
        # deleted suppression must come back when the recipient asks again.
        suppressions = [_suppression(email, send_id, reason=reason)] if reason and email else []
        events = [_event_values(event, send_id, dedupe_key)] if fresh else []
        stored = bool(_write(session, events, suppressions))
        if stored and row is not None and row.id is not None and row.status == LedgerStatus.UNKNOWN:
            _settle_unknown(session, [(row.id, event)])
    if not stored:
        return False
    if send_id != event.send_id:
        event = dataclasses.replace(event, send_id=send_id)
    _notify(engine, event)
    return True


def _notify(engine: Engine, event: TrackingEvent) -> None:
    """Call the ``tracking_event`` hook for a stored event."""
    try:
        engine.pm.hook.tracking_event(engine=engine, event=event)
    except Exception:
        # The event is stored: a failing observer must not turn a click into an error page
        # or make a provider retry a webhook whose events are already in the database.
        log.exception(
            "a tracking_event hook failed for %s event of send %s", event.type, event.send_id
        )


def event_from_row(row: EventRow) -> TrackingEvent:
    """Rebuild the ``TrackingEvent`` a stored row came from (timestamps are aware UTC)."""
    data = dict(row.data or {})
    meta = {field: data.pop(key, None) for field, key in _META_KEYS.items()}
    return TrackingEvent(
        type=EventType(row.type),
        send_id=row.send_id,
        timestamp=row.timestamp,
        url=row.url,
        user_agent=row.user_agent,
        bot=row.bot,
        machine=row.machine,
        data=data,
        **meta,
    )


def events_for(db: SAEngine, send_ids: Iterable[int]) -> dict[int, list[TrackingEvent]]:
    """Every stored event of each send, oldest first; sends without events map to []."""
    wanted = sorted(set(send_ids))
    found: dict[int, list[TrackingEvent]] = {send_id: [] for send_id in wanted}
    with session_scope(db) as session:
        for start in range(0, len(wanted), _CHUNK):
            stmt = (
                select(EventRow)
                .where(col(EventRow.send_id).in_(wanted[start : start + _CHUNK]))
                .order_by(col(EventRow.timestamp), col(EventRow.id))
            )
            for row in session.scalars(stmt):
                assert row.send_id is not None
                found[row.send_id].append(event_from_row(row))
    return found


def _batch_suppressions(
    session: Session, items: Sequence[tuple[TrackingEvent, str]]
) -> list[dict[str, Any]]:
    """The suppressions, address-wide or campaign-scoped, that ``items`` ask for."""
    wanted: list[tuple[TrackingEvent, str]] = []
    for event, _ in items:
        reason = suppression_reason(event)
        if reason and event.send_id is not None:
            wanted.append((event, reason))
    if not wanted:
        return []
    ids = sorted({e.send_id for e, _ in wanted if e.send_id is not None})
    stmt = select(col(LedgerRow.id), col(LedgerRow.email), col(LedgerRow.campaign)).where(
        col(LedgerRow.id).in_(ids)
    )
    sends = {row_id: (email, campaign) for row_id, email, campaign in session.execute(stmt)}
    suppressions: list[dict[str, Any]] = []
    for event, reason in wanted:
        if event.send_id not in sends:
            continue
        email, campaign = sends[event.send_id]
        if event.type == EventType.UNSUBSCRIBE and event.data.get("scope") == "campaign":
            suppressions.append(_suppression(email, event.send_id, campaign=campaign))
        else:
            suppressions.append(_suppression(email, event.send_id, reason=reason))
    return suppressions


def record_events(engine: Engine, items: Sequence[tuple[TrackingEvent, str]]) -> int:
    """Store a batch of ``(event, dedupe_key)`` in one transaction; return how many are new.

    The batch form of ``record_event`` for the click intake: events carry their send id
    (no provider-id matching), keys already stored are skipped, unsubscribes suppress the
    send's address (or only its campaign, when ``data["scope"] == "campaign"``), a human
    click on an item link becomes an ``email_click`` interaction
    (``engine.recommendation.clicks``), and the ``tracking_event`` hook sees each new event
    after the commit.
    """
    if not items:
        return 0
    values = [_event_values(event, event.send_id, key) for event, key in items]
    with session_scope(engine.db) as session:
        landed = _write(session, values, _batch_suppressions(session, items))
        _settle_unknown(
            session, [(e.send_id, e) for e, key in items if key in landed and e.send_id is not None]
        )
        store_email_clicks(session, [event for event, key in items if key in landed])
    for event, key in items:
        if key in landed:
            _notify(engine, event)
    return len(landed)
