"""The demo's content loop: the item CTR of a recipe fed by email clicks against the same
recipe without them.

Every round, each email as sent (the recipe fitted on the imported interactions *and* the
``email_click`` interactions of earlier rounds) is scored under the simulated population's
documented preferences (``engine.demo.simulation``): the expected clicks per item shown. The
same recipients get the lists the same recipe and filters give when fitted without any
email click, scored the same way with the same variant. The realized item CTR of the sent
emails comes from what the readers clicked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from engine.db import session_scope
from engine.demo.simulation import ReadCounts, expected_item_clicks
from engine.models import LedgerRow, LedgerStatus
from engine.recommendation.recommender import campaign_recommender

if TYPE_CHECKING:
    from engine.app import Engine


@dataclass(frozen=True)
class ContentFigures:
    """One round's item CTRs: realized and expected as sent, expected without email clicks."""

    items_shown: int
    realized: float
    expected_with: float
    expected_without: float


def _expected(
    people: Mapping[str, Mapping[str, Any]], lists: Iterable[tuple[str, str, list[str]]]
) -> tuple[float, int]:
    """Expected clicks and items shown over ``(recipient, variant, items)`` emails."""
    clicks, shown = 0.0, 0
    for recipient, variant, items in lists:
        clicks += expected_item_clicks(people[recipient], variant, items)
        shown += len(items)
    return clicks, shown


def compare_round(
    engine: Engine,
    people: Mapping[str, Mapping[str, Any]],
    run_ids: Mapping[str, str],
    reads: Mapping[str, ReadCounts],
) -> ContentFigures:
    """The item CTRs of one round's runs (``run_ids``: campaign -> run id)."""
    sent: list[tuple[str, str, str, list[str]]] = []
    with session_scope(engine.db) as session:
        stmt = (
            select(
                col(LedgerRow.campaign),
                col(LedgerRow.recipient_id),
                col(LedgerRow.variant),
                col(LedgerRow.items),
            )
            .where(col(LedgerRow.run_id).in_(list(run_ids.values())))
            .where(LedgerRow.status == LedgerStatus.SENT)
        )
        for campaign, recipient, variant, items in session.execute(stmt):
            sent.append((str(campaign), str(recipient), str(variant), list(items or [])))
    with_clicks, shown = _expected(people, ((r, v, i) for _, r, v, i in sent))
    without_lists = []
    for name in run_ids:
        campaign = engine.campaign(name)
        recommender = campaign_recommender(engine, campaign, email_clicks=False)
        for _, recipient, variant, items in (row for row in sent if row[0] == name):
            without_lists.append((recipient, variant, recommender.recommend(recipient, len(items))))
    without_clicks, without_shown = _expected(people, without_lists)
    realized_clicks = sum(read.item_clicks for read in reads.values())
    realized_shown = sum(read.items_shown for read in reads.values())
    return ContentFigures(
        items_shown=shown,
        realized=realized_clicks / realized_shown if realized_shown else 0.0,
        expected_with=with_clicks / shown if shown else 0.0,
        expected_without=without_clicks / without_shown if without_shown else 0.0,
    )
