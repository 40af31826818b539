"""Forgetting a person, and forgetting everyone's old data (``retention``).

``forget`` erases what identifies one recipient: the recipient row, their interactions
(and the stored recipe fits, caches that may hold them); in their ledger rows the
address, the recipient id, the decision id, the context snapshot and the rendered data
(items, links and their items, message and provider ids); in their events the user agents, URLs and
provider metadata. What must stay, stays: the address as a keyed hash in
``forgotten_addresses``, so the person is never mailed again even if a later import
brings them back, and the decisions and rewards (variant, probability, pmf, offered
variants, reward) that learning and evaluation need, now tied to nobody.

``apply_retention`` does the same to every ledger row (and its events) older than the
``retention`` setting; under ``tailormail serve`` the scheduler runs it every hour.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from engine.addresses import address_key
from engine.db import insert_ignore, session_scope
from engine.errors import TailormailError
from engine.models import (
    CampaignSuppressionRow,
    EventRow,
    ForgottenAddressRow,
    InteractionRow,
    LedgerRow,
    RecipeFitRow,
    RecipientRow,
    SuppressionRow,
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
    (``engine.forgetting_key``: losing or rotating the link secret changes nothing)."""
    digest = hmac.new(key, address_key(address).encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


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
    messages: int = 0  # stored copies of their emails the delivery backend erased (outbox)


def forget(engine: Engine, who: str) -> ForgetSummary:
    """Erase the recipient whose id or address is ``who`` (see the module docstring).

    An address that no recipient has now but that the ledger or the suppressions still
    hold is erased too. Raises ``UnknownRecipientError`` when nothing matches.
    """
    secret = engine.forgetting_key  # the database's own key, never the link secret
    with session_scope(engine.db) as session:
        ids, addresses = _identify(session, who.strip())
        if not ids and not addresses:
            hashed = address_hash(secret, who)
            if "@" in who and session.get(ForgottenAddressRow, hashed) is not None:
                return ForgetSummary((), 0, 0, 0, 0, 0, already=True)
            raise UnknownRecipientError(
                f"no recipient, ledger row or suppression has the id or address {who!r}"
            )
        ledger = select(col(LedgerRow.id)).where(
            or_(
                col(LedgerRow.recipient_id).in_(ids),
                func.lower(col(LedgerRow.email)).in_(addresses),
            )
        )
        send_ids = [send_id for send_id in session.scalars(ledger) if send_id is not None]
        events = _erase_sends(session, send_ids)
        interactions = _rowcount(
            session.execute(delete(InteractionRow).where(col(InteractionRow.user_id).in_(ids)))
        )
        suppressions = 0
        for table in (SuppressionRow, CampaignSuppressionRow):
            suppressions += _rowcount(
                session.execute(delete(table).where(func.lower(col(table.email)).in_(addresses)))
            )
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
        tuple(ids),
        len(addresses),
        len(send_ids),
        events,
        interactions,
        suppressions,
        messages=engine.make_backend().forget(send_ids),
    )


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
    return False


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
        rows = session.execute(
            select(col(EventRow.id), col(EventRow.data)).where(col(EventRow.send_id).in_(chunk))
        ).all()
        for event_id, data in rows:
            kept = {k: v for k, v in (data or {}).items() if k in _KEEP_EVENT_DATA}
            session.execute(
                update(EventRow)
                .where(col(EventRow.id) == event_id)
                .values(user_agent=None, url=None, data=kept)
            )
        touched += len(rows)
    return touched


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
        stmt = (
            select(col(LedgerRow.id))
            .where(col(LedgerRow.created_at) < cutoff)
            .where(col(LedgerRow.email) != ERASED)
        )
        send_ids = [send_id for send_id in session.scalars(stmt) if send_id is not None]
        events = _erase_sends(session, send_ids)
    erased = engine.make_backend().forget(send_ids)
    return RetentionSummary(cutoff, len(send_ids), events, erased)


def forgotten(session: Session, key: bytes, addresses: Iterable[str]) -> set[str]:
    """The lowercased ``addresses`` that were forgotten (their keyed hash is stored);
    ``key`` is ``engine.forgetting_key``."""
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
