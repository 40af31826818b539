"""``tailormail report CAMPAIGN --items``: which content draws clicks, and where in the email.

Every sent email keeps the items it showed in order (``ledger.items``: position 0 first)
and, per tracked link, the item and position it pointed at (``ledger.link_items``). An
item's CTR is the share of the emails showing it whose recipient clicked it (a human click:
no scanner, no HEAD probe, no machine), however often; a position's CTR the same per slot.
Both with 95% Wilson intervals, so a team sees the content and the position effect.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.table import Table
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.db import session_scope
from engine.models import EventRow, LedgerRow, LedgerStatus
from engine.reports.variants import wilson_interval
from engine.types import EventType

if TYPE_CHECKING:
    from engine.app import Engine


@dataclass(frozen=True)
class ClickRate:
    """Emails that showed something (an item, a position) and how many of them clicked it."""

    key: str
    shown: int
    clicks: int

    @property
    def ctr(self) -> float:
        """Clicks per email that showed it."""
        return self.clicks / self.shown if self.shown else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the CTR."""
        return wilson_interval(self.clicks, self.shown)


@dataclass(frozen=True)
class ItemReport:
    """A campaign's click rates per item (most shown first) and per position (first first)."""

    campaign: str
    sends: int
    items: list[ClickRate]
    positions: list[ClickRate]


def _clicked(db: SAEngine, campaign: str) -> set[tuple[int, int]]:
    """``(send id, link index)`` of every human click on a link of ``campaign``'s emails."""
    stmt = (
        select(col(EventRow.send_id), col(EventRow.data))
        .join(LedgerRow, col(LedgerRow.id) == col(EventRow.send_id))
        .where(LedgerRow.campaign == campaign)
        .where(EventRow.type == EventType.CLICK.value)
        .where(col(EventRow.bot).is_(False))
        .where(col(EventRow.machine).is_(False))
    )
    found: set[tuple[int, int]] = set()
    with session_scope(db) as session:
        for send_id, data in session.execute(stmt):
            index = (data or {}).get("link_index")
            if send_id is not None and isinstance(index, int):
                found.add((int(send_id), index))
    return found


def item_report(engine: Engine, campaign: str) -> ItemReport:
    """Clicks and CTR per item and per position over every sent email of ``campaign``."""
    engine.campaign(campaign)  # an unknown campaign is an error naming it
    clicked = _clicked(engine.db, campaign)
    stmt = (
        select(col(LedgerRow.id), col(LedgerRow.items), col(LedgerRow.link_items))
        .where(LedgerRow.campaign == campaign)
        .where(LedgerRow.status == LedgerStatus.SENT)
    )
    shown_items: Counter[str] = Counter()
    shown_positions: Counter[int] = Counter()
    item_clicks: Counter[str] = Counter()
    position_clicks: Counter[int] = Counter()
    sends = 0
    with session_scope(engine.db) as session:
        for send_id, items, link_items in session.execute(stmt):
            sends += 1
            shown = list(items or [])
            shown_items.update(set(shown))
            shown_positions.update(range(len(shown)))
            hits = _hits(int(send_id), link_items or [], clicked)
            item_clicks.update({item for item, _ in hits})
            position_clicks.update({position for _, position in hits})
    items_ = [ClickRate(item, n, item_clicks[item]) for item, n in shown_items.items()]
    items_.sort(key=lambda rate: (-rate.shown, -rate.clicks, rate.key))
    positions = [
        ClickRate(str(p + 1), shown_positions[p], position_clicks[p])
        for p in sorted(shown_positions)
    ]
    return ItemReport(campaign, sends, items_, positions)


def _hits(
    send_id: int, link_items: list[Any], clicked: set[tuple[int, int]]
) -> set[tuple[str, int]]:
    """The ``(item, position)`` pairs of one send's item links that were clicked."""
    return {
        (str(target[0]), int(target[1]))
        for index, target in enumerate(link_items)
        if target and (send_id, index) in clicked
    }


def item_tables(report: ItemReport, limit: int | None = None) -> list[Table]:
    """The report as two rich tables: per item (the ``limit`` most shown) and per position."""
    tables = []
    for title, first, rows in (
        (f"campaign {report.campaign}: clicks per item", "item", report.items[:limit]),
        (f"campaign {report.campaign}: clicks per position", "position", report.positions),
    ):
        table = Table(title=f"{title} ({report.sends} emails)")
        for column in (first, "shown", "clicks", "CTR", "95% interval"):
            table.add_column(column, justify="left" if column == first else "right")
        for rate in rows:
            low, high = rate.interval
            table.add_row(
                rate.key,
                str(rate.shown),
                str(rate.clicks),
                f"{rate.ctr:.1%}",
                f"{low:.1%} - {high:.1%}",
            )
        tables.append(table)
    return tables
