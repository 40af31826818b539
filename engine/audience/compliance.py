"""Compliance, checked by the core before any plugin: nobody who asked for no mail gets it.

Suppressed addresses (unsubscribes, complaints, hard bounces, imported suppressions), an
unsubscribe from one campaign, and forgotten addresses are skipped here, always: no
configuration turns this off (``disabled_plugins`` naming a module that once held these
checks refuses to start, see ``engine.plugins``). Frequency caps are a plugin
(``plugins.frequency_caps``) and may be replaced. A batch costs one query for both
suppression tables and one for forgotten addresses.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import literal, union_all
from sqlalchemy.orm import Session
from sqlmodel import col, select

from engine.audience.forgetting import forgotten
from engine.db import session_scope
from engine.models import CampaignSuppressionRow, SuppressionRow
from engine.types import Recipient

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

FORGOTTEN = "forgotten (erased on request: never mailed again)"
"""The skip reason of a forgotten address."""


def suppressed(session: Session, campaign: Campaign, emails: Collection[str]) -> dict[str, str]:
    """The lower-cased ``emails`` that must not get ``campaign``, with the reason.

    An address suppressed everywhere wins over an unsubscribe from this campaign only.
    """
    if not emails:
        return {}
    wanted = sorted(emails)
    everywhere = select(
        col(SuppressionRow.email), col(SuppressionRow.reason), literal(False)
    ).where(col(SuppressionRow.email).in_(wanted))
    this_campaign = (
        select(col(CampaignSuppressionRow.email), literal(""), literal(True))
        .where(col(CampaignSuppressionRow.email).in_(wanted))
        .where(col(CampaignSuppressionRow.campaign) == campaign.name)
    )
    reasons: dict[str, str] = {}
    for email, reason, campaign_only in session.execute(union_all(everywhere, this_campaign)):
        if campaign_only:
            reasons.setdefault(email, "unsubscribed from this campaign")
        else:
            reasons[email] = f"suppressed ({reason})"
    return reasons


def compliance_skips(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, str]:
    """``{recipient_id: reason}`` for the recipients the law and their wishes rule out:
    forgotten first (the strongest reason), then suppressed addresses."""
    if not recipients:
        return {}
    emails = {r.recipient_id: r.email.lower() for r in recipients}
    with session_scope(engine.db) as session:
        erased = forgotten(session, engine.forgetting_key, set(emails.values()))
        blocked = suppressed(session, campaign, set(emails.values()) - erased)
    reasons = {rid: FORGOTTEN for rid, email in emails.items() if email in erased}
    reasons.update({rid: blocked[email] for rid, email in emails.items() if email in blocked})
    return reasons
