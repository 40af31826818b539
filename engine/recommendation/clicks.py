"""The content loop: a person's click on an item inside an email becomes an interaction.

A link made by the templates' ``item_url(item)`` has its item and position recorded with
the send (``ledger.link_items``, by link index), never in the URL. When the intake's writer
stores a click on such a link, and the click is human (no scanner, no HEAD probe, no
machine), the recipient gets an ``email_click`` interaction with that item, once per send
and item however often they click it. Recipes see it at their next fit; each campaign says
how much it weighs against imported interactions (``email_click_weight``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlmodel import Session, col, select

from engine.db import insert_ignore
from engine.models import InteractionRow, LedgerRow, as_utc
from engine.types import EventType, TrackingEvent

EMAIL_CLICK = "email_click"
_CHUNK = 500  # keeps IN (...) lists well below every database's bound-parameter limit


def is_human_item_click(event: TrackingEvent) -> bool:
    """True for a click by a person on a tracked link (the item is looked up later)."""
    return (
        EventType(event.type) == EventType.CLICK
        and not event.bot
        and not event.machine
        and event.send_id is not None
        and isinstance(event.data.get("link_index"), int)
    )


def _sends(session: Session, send_ids: Sequence[int]) -> dict[int, tuple[str, list[Any]]]:
    """Recipient and link items of each send that has item links."""
    found: dict[int, tuple[str, list[Any]]] = {}
    for start in range(0, len(send_ids), _CHUNK):
        stmt = select(
            col(LedgerRow.id), col(LedgerRow.recipient_id), col(LedgerRow.link_items)
        ).where(col(LedgerRow.id).in_(send_ids[start : start + _CHUNK]))
        for send_id, recipient, link_items in session.execute(stmt):
            if link_items:
                found[int(send_id)] = (str(recipient), list(link_items))
    return found


def email_click_rows(session: Session, events: Iterable[TrackingEvent]) -> list[dict[str, Any]]:
    """The ``email_click`` interaction rows that ``events`` make (one per send and item)."""
    human = [event for event in events if is_human_item_click(event)]
    if not human:
        return []
    sends = _sends(session, sorted({event.send_id for event in human if event.send_id}))
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for event in sorted(human, key=lambda e: as_utc(e.timestamp)):
        assert event.send_id is not None
        found = sends.get(event.send_id)
        index = event.data["link_index"]
        if found is None or not 0 <= index < len(found[1]) or not found[1][index]:
            continue  # not a send of ours, or a link to no item (the unsubscribe footer...)
        recipient, link_items = found
        item_id = str(link_items[index][0])
        rows.setdefault(
            (event.send_id, item_id),
            {
                "user_id": recipient,
                "item_id": item_id,
                "timestamp": as_utc(event.timestamp),
                "value": 1.0,
                "kind": EMAIL_CLICK,
                "send_id": event.send_id,
            },
        )
    return list(rows.values())


def store_email_clicks(session: Session, events: Iterable[TrackingEvent]) -> int:
    """Store the interactions of the human item clicks among ``events``; how many are new."""
    return insert_ignore(session, InteractionRow, email_click_rows(session, events))
