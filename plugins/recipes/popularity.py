"""The ``popularity`` recipe: the most interacted-with items, like Amazon Personalize's
popularity count. A baseline, and the fallback for recipients with no history."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import timedelta

from engine import hookimpl
from engine.hookspecs import RecipeFactory
from engine.models import as_utc
from engine.types import Interaction, Item


class PopularityRecipe:
    """Ranks items by the sum of their interaction values, ties broken by item id.

    ``window_days`` counts only interactions that many days before the newest one (the
    newest, not the wall clock, so a replay of old data ranks the same). Items whose count
    is below ``min_count`` rank after the counted ones, with the catalogue items nobody
    interacted with, by id. When a catalogue is given to ``fit`` only its items are
    recommended, since an alert cannot show an item that is no longer in it.
    """

    name = "popularity"

    def __init__(self, window_days: float | None = None, min_count: int = 1) -> None:
        if window_days is not None and not window_days > 0:
            raise ValueError(f"window_days must be positive, got {window_days!r}")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count!r}")
        self.window_days = window_days
        self.min_count = min_count
        self._ranking: list[str] | None = None
        self._seen: dict[str, set[str]] = {}
        self._counts: dict[str, float] = {}

    def fit(self, interactions: Iterable[Interaction], items: Iterable[Item] = ()) -> None:
        """Count every item's interactions and rank them; replaces any earlier fit."""
        events = [(as_utc(i.timestamp), i) for i in interactions]
        cutoff = None
        if self.window_days is not None and events:
            cutoff = max(moment for moment, _ in events) - timedelta(days=self.window_days)
        # Whole values are summed as exact ints and the rest with fsum, so the counts (and
        # so the ties) do not depend on the order the interactions arrive in.
        whole: dict[str, int] = defaultdict(int)
        fractional: dict[str, list[float]] = defaultdict(list)
        seen: dict[str, set[str]] = defaultdict(set)
        for moment, event in events:
            seen[event.user_id].add(event.item_id)
            if cutoff is not None and moment < cutoff:
                continue
            value = float(event.value)
            if value.is_integer():
                whole[event.item_id] += int(value)
            else:
                fractional[event.item_id].append(value)
        counts = {
            item: math.fsum([float(whole.get(item, 0)), *fractional.get(item, [])])
            for item in whole.keys() | fractional.keys()
        }
        catalogue = {item.item_id for item in items}
        candidates = catalogue or {item for users_items in seen.values() for item in users_items}
        popular = [item for item in candidates if counts.get(item, 0.0) >= self.min_count]
        popular.sort(key=lambda item: (-counts[item], item))
        self._ranking = popular + sorted(candidates.difference(popular))
        self._counts = {item: counts.get(item, 0.0) for item in candidates}
        self._seen = dict(seen)

    def _ranked(self) -> list[str]:
        if self._ranking is None:
            raise RuntimeError("PopularityRecipe.fit() must be called before recommending")
        return self._ranking

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The ``k`` most popular items ``user_id`` has not interacted with, minus ``exclude``."""
        skip = self._seen.get(user_id, set()) | set(exclude)
        return self._top(k, skip)

    def similar(self, item_id: str, k: int) -> list[str]:
        """The ``k`` most popular items other than ``item_id`` (popularity knows no similarity)."""
        return self._top(k, {item_id})

    def count(self, item_id: str) -> float:
        """The item's interaction count within the window (0 for unknown items)."""
        self._ranked()
        return self._counts.get(item_id, 0.0)

    def _top(self, k: int, skip: set[str]) -> list[str]:
        ranking = self._ranked()
        chosen: list[str] = []
        for item in ranking:
            if len(chosen) >= k:
                break
            if item not in skip:
                chosen.append(item)
        return chosen


@hookimpl
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register the ``popularity`` recipe."""
    register("popularity", PopularityRecipe)
