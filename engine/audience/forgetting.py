"""Forgetting a person, and forgetting everyone's old data (``retention``).

``forget`` erases what identifies one recipient: the recipient row, their interactions
(and the stored recipe fits, caches that may hold them); in their ledger rows the
address, the recipient id, the decision id, the context snapshot and the rendered data
(items, links and their items, message and provider ids); in their events, and in any
event whose payload names their address or id (a provider event that matched no send),
the user agents, URLs and provider metadata; every file tailormail wrote that holds them
(``engine.audience.personal_files``); on SQLite, the old page images of the WAL and the file's
free space (``engine.audience.compaction``). What must stay, stays: the address as a keyed hash in
``forgotten_addresses``, so the person is never mailed again even if a later import
brings them back, the decisions and rewards (variant, probability, pmf, offered
variants, reward) that learning and evaluation need, now tied to nobody, and a row in
``erasures`` saying that a forget happened, when, and how much it erased.

``apply_retention`` does the same to every ledger row (and its events) older than the
``retention`` setting; under ``tailormail serve`` the scheduler runs it every hour.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, delete, func, or_, select, update
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session
from sqlmodel import Session as SQLModelSession
from sqlmodel import col

from engine.addresses import address_key
from engine.audience import personal_files
from engine.audience.compaction import Compaction, compact, secure_delete
from engine.db import insert_ignore, session_scope
from engine.errors import PluginError, TailormailError
from engine.models import (
    CampaignSuppressionRow,
    ErasureRow,
    EventRow,
    ForgottenAddressRow,
    IdempotencyRow,
    InteractionRow,
    LedgerRow,
    RecipeFitRow,
    RecipientRow,
    SuppressionRow,
    TriggerRow,
    WebhookDeliveryRow,
    utcnow,
)

if TYPE_CHECKING:
    from engine.app import Engine

ERASED = "erased"
"""What an erased ledger row keeps as its address."""
_KEEP_EVENT_DATA = frozenset({"scope", "bounce_type", "link_index"})  # what rewards read
_CHUNK = 500


class UnknownRecipientError(TailormailError):
    """``forget`` was given an id or address that tailormail holds nothing about."""


def address_hash(key: bytes, address: str) -> str:
    """The keyed hash kept for a forgotten address, under the database's own key
    (``engine.audience.forgetting_key``: losing or rotating the link secret changes nothing)."""
    digest = hmac.new(key, address_key(address).encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


def address_holder(engine: Engine, address: str) -> str:
    """The keyed hash the files rendered for ``address`` are registered under (a preview,
    a test copy: ``engine.audience.personal_files``): its ``address_hash``."""
    return address_hash(engine.forgetting_key, address)


@dataclass(frozen=True)
class ForgetSummary:
    """What ``forget`` erased: recipients, addresses hashed, rows touched per table."""

    recipient_ids: tuple[str, ...]
    addresses: int
    ledger_rows: int
    events: int
    interactions: int
    suppressions: int
    already: bool = False  # the address had been forgotten before: nothing left to erase
    messages: int = 0  # stored copies of their emails the delivery backends erased (outbox)
    files: int = 0  # other files cleaned: previews, test copies, exports, spool, journals
    compaction: Compaction | None = None  # SQLite: whether the WAL could be truncated


def forget(engine: Engine, who: str) -> ForgetSummary:
    """Erase the recipient whose id or address is ``who`` (see the module docstring).

    An address that no recipient has now but that the ledger, the suppressions or an
    event's payload still hold is erased too. Raises ``UnknownRecipientError`` when
    nothing matches. Asked again for an address already forgotten, it cleans the files
    and the WAL again (``already``).
    """
    who = who.strip()
    secret = engine.forgetting_key  # the database's own key, never the link secret
    send_ids: list[int] = []
    decisions: list[str] = []
    with session_scope(engine.db) as session:
        secure_delete(session)  # what this transaction overwrites is zeroed, not left free
        ids, addresses = _identify(session, who)
        if not ids and not addresses:
            if "@" not in who or not forgotten(session, secret, [who]):
                raise UnknownRecipientError(
                    f"no recipient, ledger row, suppression or event has the id or address {who!r}"
                )
            summary = ForgetSummary((), 0, 0, 0, 0, 0, already=True)
            addresses = [address_key(who)]
        else:
            ledger = select(col(LedgerRow.id), col(LedgerRow.decision_id)).where(
                or_(
                    col(LedgerRow.recipient_id).in_(ids),
                    func.lower(col(LedgerRow.email)).in_(addresses),
                )
            )
            for send_id, decision_id in session.execute(ledger).all():
                send_ids.append(send_id)
                decisions.append(decision_id)
            summary = _erase_rows(session, secret, ids, addresses, send_ids)
    person = personal_files.Person(
        tuple(addresses),
        tuple(ids),
        tuple(decisions),
        tuple(send_ids),
        tuple(address_holder(engine, a) for a in addresses),
    )
    summary = replace(
        summary,
        messages=erase_copies(engine, send_ids),
        files=personal_files.erase(engine, person),
    )
    compaction = compact(engine.db)
    _record(engine.db, summary, compaction)
    return replace(summary, compaction=compaction)


def _erase_rows(
    session: SQLModelSession,
    secret: bytes,
    ids: list[str],
    addresses: list[str],
    send_ids: list[int],
) -> ForgetSummary:
    """Erase (or anonymize) the database rows of these ids, addresses and sends."""
    events = _erase_sends(session, send_ids)
    events += _strip_events(session, _naming_events(session, ids, addresses, send_ids))
    interactions = _rowcount(
        session.execute(delete(InteractionRow).where(col(InteractionRow.user_id).in_(ids)))
    )
    suppressions = 0
    for table in (SuppressionRow, CampaignSuppressionRow):
        suppressions += _rowcount(
            session.execute(delete(table).where(func.lower(col(table.email)).in_(addresses)))
        )
    _erase_triggers(session, ids, send_ids)
    session.execute(delete(RecipientRow).where(col(RecipientRow.id).in_(ids)))
    # Stored recipe fits are caches that may hold their interactions: refitted on use.
    session.execute(delete(RecipeFitRow))
    now = utcnow()
    insert_ignore(
        session,
        ForgottenAddressRow,
        [{"address_hash": address_hash(secret, a), "forgotten_at": now} for a in addresses],
    )
    return ForgetSummary(
        tuple(ids), len(addresses), len(send_ids), events, interactions, suppressions
    )


def _erase_triggers(session: Session, ids: Sequence[str], send_ids: Sequence[int]) -> None:
    """Erase what the API stored of these people: their triggers' payloads, the status
    webhook deliveries about them, and the stored answers of requests that named them."""
    triggers = TriggerRow.__table__.c  # type: ignore[attr-defined]
    send_ids = list(send_ids)
    found = select(triggers.id).where(
        or_(triggers.recipient_id.in_(list(ids)), triggers.send_id.in_(send_ids))
    )
    trigger_ids = [str(t) for t in session.scalars(found).all()]
    if trigger_ids:
        deliveries = WebhookDeliveryRow.__table__.c  # type: ignore[attr-defined]
        session.execute(delete(WebhookDeliveryRow).where(deliveries.trigger_id.in_(trigger_ids)))
        session.execute(delete(TriggerRow).where(triggers.id.in_(trigger_ids)))
    answers = cast(col(IdempotencyRow.answer), String)
    named = [answers.like(f"%{_like(json.dumps(r))}%", escape="\\") for r in ids]
    if named:
        session.execute(delete(IdempotencyRow).where(or_(*named)))


def erase_copies(engine: Engine, send_ids: Sequence[int]) -> int:
    """Let the configured backend and the ``outbox`` (whatever is configured now: copies
    written before a switch stay otherwise) erase their copies of these sends."""
    erased = 0
    for name in sorted({engine.settings.delivery.backend, personal_files.OUTBOX}):
        try:
            backend = engine.make_backend(name)
        except PluginError:  # no outbox plugin in this engine: it wrote no copies
            continue
        erased += backend.forget(send_ids)
    return erased


def _record(db: SAEngine, summary: ForgetSummary, compaction: Compaction | None) -> None:
    """Keep that a forget happened, when and how much it erased: numbers, nobody's name."""
    with session_scope(db) as session:
        secure_delete(session)
        session.add(
            ErasureRow(
                kind="forget",
                recipients=len(summary.recipient_ids),
                addresses=summary.addresses,
                ledger_rows=summary.ledger_rows,
                events=summary.events,
                interactions=summary.interactions,
                suppressions=summary.suppressions,
                files=summary.messages + summary.files,
                compacted=None if compaction is None else compaction.done,
            )
        )


def compact_database(engine: Engine) -> Compaction | None:
    """``forget --compact``: VACUUM and truncate the WAL (SQLite), and record that it ran."""
    compaction = compact(engine.db, vacuum=True)
    if compaction is not None:
        with session_scope(engine.db) as session:
            session.add(ErasureRow(kind="compact", compacted=compaction.done))
    return compaction


def _identify(session: Session, who: str) -> tuple[list[str], list[str]]:
    """The recipient ids and the (lowercased) addresses ``who`` names."""
    ids: set[str] = set()
    addresses: set[str] = set()
    row = session.get(RecipientRow, who)
    if row is not None:
        ids.add(row.id)
        addresses.add(address_key(row.email))
        stmt = select(col(LedgerRow.email)).where(col(LedgerRow.recipient_id) == row.id)
        addresses.update(address_key(e) for e in session.scalars(stmt.distinct()) if e)
    if "@" in who:
        key = address_key(who)
        addresses.add(key)
        by_address = select(col(RecipientRow.id)).where(func.lower(col(RecipientRow.email)) == key)
        ids.update(session.scalars(by_address))
        in_ledger = select(col(LedgerRow.recipient_id)).where(
            func.lower(col(LedgerRow.email)) == key
        )
        ids.update(session.scalars(in_ledger.distinct()))
    elif not ids and _naming_events(session, [who], [], []):
        ids.add(who)  # an id only events hold (a provider's metadata)
    if ids or addresses:
        known = _known(session, ids, addresses)
        if not known:
            return [], []
    return sorted(ids), sorted(addresses)


def _known(session: Session, ids: set[str], addresses: set[str]) -> bool:
    """Whether anything is stored about these ids or addresses."""
    for table, column, values in (
        (RecipientRow, RecipientRow.id, ids),
        (LedgerRow, LedgerRow.recipient_id, ids),
        (InteractionRow, InteractionRow.user_id, ids),
        (SuppressionRow, SuppressionRow.email, addresses),
        (CampaignSuppressionRow, CampaignSuppressionRow.email, addresses),
    ):
        if values and session.scalar(
            select(func.count()).select_from(table).where(col(column).in_(sorted(values)))
        ):
            return True
    return bool(_naming_events(session, sorted(ids), sorted(addresses), []))


def _like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _naming_events(
    session: Session, ids: Sequence[str], addresses: Sequence[str], skip: Sequence[int]
) -> list[int]:
    """Events whose payload, URL or user agent names one of these addresses, or whose
    payload has one of these ids as a value (a provider event that matched no send).
    Those of the sends ``skip`` are left out (``_erase_sends`` strips them)."""
    data = cast(col(EventRow.data), String)
    conditions = []
    for address in addresses:
        for form in {address, json.dumps(address)[1:-1]}:
            pattern = f"%{_like(form.lower())}%"
            for column in (data, col(EventRow.url), col(EventRow.user_agent)):
                conditions.append(func.lower(column).like(pattern, escape="\\"))
    for recipient_id in ids:
        conditions.append(data.like(f"%{_like(json.dumps(recipient_id))}%", escape="\\"))
    if not conditions:
        return []
    stmt = select(col(EventRow.id), col(EventRow.send_id)).where(or_(*conditions))
    left_out = set(skip)
    found = session.execute(stmt).all()
    return [i for i, send_id in found if i is not None and send_id not in left_out]


def _erase_sends(session: Session, send_ids: list[int]) -> int:
    """Anonymize ledger rows ``send_ids`` and strip their events; return events touched."""
    touched = 0
    for start in range(0, len(send_ids), _CHUNK):
        chunk = send_ids[start : start + _CHUNK]
        for send_id in chunk:  # each row gets its own random stand-in id
            session.execute(
                update(LedgerRow)
                .where(col(LedgerRow.id) == send_id)
                .values(
                    recipient_id=f"{ERASED}:{uuid.uuid4().hex}",
                    decision_id=uuid.uuid4().hex,
                    email=ERASED,
                    context=None,
                    items=None,
                    links=None,
                    link_items=None,
                    message_id=None,
                    send_ref=None,
                    provider_id=None,
                    error=None,
                )
            )
        events = select(col(EventRow.id)).where(col(EventRow.send_id).in_(chunk))
        touched += _strip_events(session, list(session.scalars(events)))
    return touched


def _strip_events(session: Session, event_ids: list[int]) -> int:
    """Drop the user agent, URL and payload of these events, but what rewards read."""
    for start in range(0, len(event_ids), _CHUNK):
        rows = session.execute(
            select(col(EventRow.id), col(EventRow.data)).where(
                col(EventRow.id).in_(event_ids[start : start + _CHUNK])
            )
        ).all()
        for event_id, data in rows:
            kept = {k: v for k, v in (data or {}).items() if k in _KEEP_EVENT_DATA}
            session.execute(
                update(EventRow)
                .where(col(EventRow.id) == event_id)
                .values(user_agent=None, url=None, data=kept)
            )
    return len(event_ids)


@dataclass(frozen=True)
class RetentionSummary:
    """What one retention pass anonymized."""

    cutoff: datetime
    ledger_rows: int
    events: int
    messages: int = 0  # stored copies of those emails the delivery backend erased (outbox)


def apply_retention(engine: Engine, now: datetime | None = None) -> RetentionSummary | None:
    """Anonymize ledger rows created before ``now - retention`` and their events, like
    ``forget`` does (addresses are not hashed: these people may still be subscribed).

    Returns None when no ``retention`` is configured.
    """
    retention = engine.settings.retention
    if retention is None:
        return None
    cutoff = (now or utcnow()) - retention
    with session_scope(engine.db) as session:
        secure_delete(session)
        stmt = (
            select(col(LedgerRow.id))
            .where(col(LedgerRow.created_at) < cutoff)
            .where(col(LedgerRow.email) != ERASED)
        )
        send_ids = [send_id for send_id in session.scalars(stmt) if send_id is not None]
        events = _erase_sends(session, send_ids)
    erased = erase_copies(engine, send_ids)
    if send_ids:
        compact(engine.db, attempts=1)  # hourly under serve: the next pass retries
    return RetentionSummary(cutoff, len(send_ids), events, erased)


def forgotten(session: Session, key: bytes, addresses: Iterable[str]) -> set[str]:
    """The lowercased ``addresses`` that were forgotten (their keyed hash is stored);
    ``key`` is ``engine.audience.forgetting_key``."""
    hashes = {address_hash(key, a): address_key(a) for a in addresses}
    found: set[str] = set()
    keys = sorted(hashes)
    for start in range(0, len(keys), _CHUNK):
        stmt = select(col(ForgottenAddressRow.address_hash)).where(
            col(ForgottenAddressRow.address_hash).in_(keys[start : start + _CHUNK])
        )
        found.update(hashes[h] for h in session.scalars(stmt))
    return found


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)
