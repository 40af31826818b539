"""Whether the reader of an unsubscribe link is unsubscribed already, asked within a bound.

The unsubscribe page must answer while the database is down (the choice is then kept in
the intake log), so this lookup is only a courtesy: it gets ``LOOKUP_SECONDS``, and any
failure or delay shows the normal page.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.db import session_scope
from engine.models import CampaignSuppressionRow, LedgerRow, SuppressionRow

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)
LOOKUP_SECONDS = 0.5
Scope = Literal["all", "campaign"]


def unsubscribed_scope(db: SAEngine, send_id: int) -> Scope | None:
    """``all`` when the send's address gets no more mail at all, ``campaign`` when it left
    only the send's campaign, None when it still gets both (or the send is unknown)."""
    with session_scope(db) as session:
        stmt = select(col(LedgerRow.email), col(LedgerRow.campaign))
        send = session.execute(stmt.where(col(LedgerRow.id) == send_id)).first()
        if send is None or not send.email:
            return None
        email = send.email.strip().lower()
        if session.get(SuppressionRow, email) is not None:
            return "all"
        if session.get(CampaignSuppressionRow, (email, send.campaign)) is not None:
            return "campaign"
    return None


async def current_scope(engine: Engine, send_id: int) -> Scope | None:
    """``unsubscribed_scope`` off the event loop, or None after ``LOOKUP_SECONDS`` or on
    any error (the database down): the page then offers the choice as usual."""
    # An executor future, not anyio's worker thread: cancelling it on time-out does not
    # wait for the thread, so a hanging database cannot hold the page.
    loop = asyncio.get_running_loop()
    lookup = loop.run_in_executor(None, unsubscribed_scope, engine.db, send_id)
    try:
        return await asyncio.wait_for(lookup, LOOKUP_SECONDS)
    except Exception as exc:  # TimeoutError, or the database refusing the connection
        log.info("unsubscribe page: no suppression lookup (%s); showing the choice", exc)
        return None
