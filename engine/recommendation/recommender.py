"""A campaign's recipe with its filters: what the pipeline asks for each recipient's items.

The recipe is asked for more items than the email needs; the campaign's filters (already
interacted, attribute rules, the ``filter_items`` hook) drop what may not be shown, and the
recipe is asked again, with a larger list and the dropped items excluded, until ``k`` items
pass or no eligible item is left. So an email is never short while eligible items remain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from engine.audience.importer import load_items
from engine.db import session_scope
from engine.models import InteractionRow, utcnow
from engine.recommendation.clicks import EMAIL_CLICK
from engine.recommendation.filters import FilterConfig, excluded_by_rules
from engine.recommendation.fits import StoredFit, fit_or_reuse, fit_recipe
from engine.types import Interaction, Item, Recipe

if TYPE_CHECKING:
    import pluggy
    from sqlalchemy.engine import Engine as SAEngine

    from engine.app import Engine
    from engine.campaigns import Campaign

# First ask for this many more than needed: a few filtered items then cost no second call.
_HEADROOM = 10


def interacted_items(db: SAEngine, kinds: list[str] | None) -> dict[str, set[str]]:
    """Per user, the items they interacted with (of ``kinds``; None: every kind)."""
    if kinds is not None and not kinds:
        return {}
    table = InteractionRow.__table__  # type: ignore[attr-defined]
    stmt = select(table.c.user_id, table.c.item_id).distinct()
    if kinds is not None:
        stmt = stmt.where(table.c.kind.in_(kinds))
    seen: dict[str, set[str]] = {}
    with session_scope(db) as session:
        for user, item in session.execute(stmt):
            seen.setdefault(user, set()).add(item)
    return seen


class CampaignRecommender:
    """A fitted recipe behind a campaign's filters; answers like a ``Recipe``."""

    def __init__(
        self,
        recipe: Recipe,
        *,
        catalogue: Mapping[str, Item],
        filters: FilterConfig | None = None,
        seen: Mapping[str, set[str]] | None = None,
        hook: Any = None,
        hook_args: Mapping[str, Any] | None = None,
        fit: StoredFit | None = None,
        now: datetime | None = None,
    ) -> None:
        self.recipe = recipe
        self.catalogue = dict(catalogue)
        self.filters = filters or FilterConfig()
        self.seen = dict(seen or {})
        self.fit_info = fit
        self._hook = hook
        self._hook_args = dict(hook_args or {})
        pairs = ((i, item.attributes) for i, item in self.catalogue.items())
        # Rules are checked once, at the run's start ("newer than" counts from then).
        self.blocked = excluded_by_rules(self.filters, pairs, now or utcnow())

    def fit(self, interactions: Iterable[Interaction], items: Iterable[Item] = ()) -> None:
        """Refit the underlying recipe (the filters stay)."""
        fit_recipe(self.recipe, interactions, items)

    def _dropped_by_plugins(self, user_id: str, item_ids: list[str]) -> set[str]:
        if self._hook is None or not item_ids:
            return set()
        items = [self.catalogue.get(i) or Item(i) for i in item_ids]
        dropped: set[str] = set()
        for answer in self._hook(user_id=user_id, items=items, **self._hook_args):
            dropped.update(answer or ())
        return dropped

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """``k`` items for ``user_id`` that pass every filter (fewer only when none remain)."""
        if k <= 0:
            return []
        blocked = self.blocked | self.seen.get(user_id, set()) | set(exclude)
        ask = k + _HEADROOM
        limit = len(self.catalogue) + len(blocked) + k
        while True:
            answer = list(dict.fromkeys(self.recipe.recommend(user_id, ask, exclude=blocked)))
            fresh = [item for item in answer if item not in blocked]  # a recipe may ignore it
            dropped = self._dropped_by_plugins(user_id, fresh)
            kept = [item for item in fresh if item not in dropped]
            if len(kept) >= k or len(answer) < ask or ask >= limit:
                return kept[:k]
            blocked |= dropped
            ask *= 2

    def similar(self, item_id: str, k: int) -> list[str]:
        """Items like ``item_id`` that pass the campaign's attribute rules."""
        finder = getattr(self.recipe, "similar", None)
        if finder is None or k <= 0:
            return []
        ask = k + _HEADROOM
        while True:
            answer = finder(item_id, ask)
            kept = [i for i in answer if i not in self.blocked and i != item_id]
            if len(kept) >= k or len(answer) < ask or ask > len(self.catalogue) + k:
                return list(kept[:k])
            ask *= 2


def _kinds_but(db: SAEngine, kinds: list[str] | None, dropped: str) -> list[str]:
    """``kinds`` (None: every stored kind) without ``dropped``."""
    if kinds is None:
        table = InteractionRow.__table__  # type: ignore[attr-defined]
        with session_scope(db) as session:
            kinds = [str(k) for k in session.scalars(select(table.c.kind).distinct())]
    return [kind for kind in kinds if kind != dropped]


def campaign_recommender(
    engine: Engine, campaign: Campaign, run_id: str | None = None, *, email_clicks: bool = True
) -> CampaignRecommender:
    """The campaign's recipe, fitted once per data change and shared by the run's workers.

    ``email_clicks=False`` builds the same recipe and filters as if no click inside an email
    had ever been stored (what the demo compares the content loop against).
    """
    weight = campaign.email_click_weight if email_clicks else 0.0
    stored = fit_or_reuse(
        engine,
        campaign.recipe.name,
        campaign.recipe.params,
        run_id,
        kind_weights={EMAIL_CLICK: weight},
    )
    filters: FilterConfig = campaign.filters
    pm: pluggy.PluginManager = engine.pm
    kinds = filters.interacted_kinds()
    if not email_clicks and kinds != []:
        kinds = _kinds_but(engine.db, kinds, EMAIL_CLICK)
    return CampaignRecommender(
        stored.recipe,
        catalogue={item.item_id: item for item in load_items(engine.db)},
        filters=filters,
        seen=interacted_items(engine.db, kinds),
        # a hook nobody implements is not called (microseconds per recipient)
        hook=pm.hook.filter_items if pm.hook.filter_items.get_hookimpls() else None,
        hook_args={"engine": engine, "campaign": campaign},
        fit=stored,
    )
