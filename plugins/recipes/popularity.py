"""The ``popularity`` recipe: the most interacted-with items, like Amazon Personalize's
popularity count. A baseline, and the fallback for recipients with no history."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from engine import hookimpl
from engine.hookspecs import RecipeFactory
from engine.models import as_utc
from engine.types import Interaction, Item

MODES = ("count", "trending")


def _exact_sum(values: list[float]) -> float:
    # Whole values are summed as exact ints and the rest with fsum, so the counts (and so
    # the ties) do not depend on the order the interactions arrive in.
    whole = sum(int(v) for v in values if v.is_integer())
    return math.fsum([float(whole), *(v for v in values if not v.is_integer())])


class PopularityRecipe:
    """Ranks items by the sum of their interaction values, ties broken by item id.

    ``window_days`` counts only interactions that many days before the newest one (the
    newest, not the wall clock, so a replay of old data ranks the same), and ``min_count``
    how many (undecayed) an item needs there to rank by its score. ``half_life_days``
    makes an interaction count half as much for every that many days it is older than the
    newest. ``mode = "trending"`` ranks by growth instead: the score in the last window
    minus the score in the window before it (``window_days`` is then required). The other
    items rank after the scored ones, with the catalogue items nobody interacted with, by
    id. When a catalogue is given to ``fit`` only its items are recommended, since an alert
    cannot show an item that is no longer in it. ``kind_weights`` multiplies each
    interaction kind's values (absent kinds weigh 1).
    """

    name = "popularity"

    def __init__(
        self,
        window_days: float | None = None,
        min_count: float = 1,
        half_life_days: float | None = None,
        mode: str = "count",
        kind_weights: Mapping[str, float] | None = None,
    ) -> None:
        for label, days in (("window_days", window_days), ("half_life_days", half_life_days)):
            if days is not None and (isinstance(days, bool) or not days > 0):
                raise ValueError(f"{label} must be positive, got {days!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "trending" and window_days is None:
            raise ValueError("mode 'trending' needs window_days (growth over which window?)")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count!r}")
        self.window_days = window_days
        self.half_life_days = half_life_days
        self.min_count = min_count
        self.mode = mode
        self.kind_weights = dict(kind_weights or {})
        self._ranking: list[str] | None = None
        self._counts: dict[str, float] = {}

    def _weight(self, moment: datetime, newest: datetime) -> float:
        if self.half_life_days is None:
            return 1.0
        age_days = (newest - moment).total_seconds() / 86400.0
        return float(0.5 ** (age_days / self.half_life_days))

    def fit(self, interactions: Iterable[Interaction], items: Iterable[Item] = ()) -> None:
        """Score every item and rank them; replaces any earlier fit."""
        events = [(as_utc(i.timestamp), i) for i in interactions]
        newest = max((moment for moment, _ in events), default=None)
        window = timedelta(days=self.window_days) if self.window_days is not None else None
        raw: dict[str, list[float]] = defaultdict(list)  # undecayed, for ``min_count``
        current: dict[str, list[float]] = defaultdict(list)
        previous: dict[str, list[float]] = defaultdict(list)
        interacted: set[str] = set()
        for moment, event in events:
            interacted.add(event.item_id)
            assert newest is not None
            value = float(event.value) * self.kind_weights.get(event.kind, 1.0)
            decayed = value * self._weight(moment, newest)
            if window is None or moment >= newest - window:
                raw[event.item_id].append(value)
                current[event.item_id].append(decayed)
            elif moment >= newest - 2 * window:
                previous[event.item_id].append(decayed)
        counts = {item: _exact_sum(values) for item, values in current.items()}
        if self.mode == "trending":
            for item in counts.keys() | previous.keys():
                counts[item] = counts.get(item, 0.0) - _exact_sum(previous.get(item, []))
        catalogue = {item.item_id for item in items}
        candidates = catalogue or interacted
        popular = [
            item
            for item in candidates
            if _exact_sum(raw.get(item, [])) >= self.min_count and counts.get(item, 0.0) > 0
        ]
        popular.sort(key=lambda item: (-counts[item], item))
        self._ranking = popular + sorted(candidates.difference(popular))
        self._counts = {item: counts.get(item, 0.0) for item in candidates}

    def _ranked(self) -> list[str]:
        if self._ranking is None:
            raise RuntimeError("PopularityRecipe.fit() must be called before recommending")
        return self._ranking

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The ``k`` most popular items outside ``exclude`` (the same for every user)."""
        return self._top(k, set(exclude))

    def similar(self, item_id: str, k: int) -> list[str]:
        """The ``k`` most popular items other than ``item_id`` (popularity knows no similarity)."""
        return self._top(k, {item_id})

    def count(self, item_id: str) -> float:
        """The item's score: its count within the window (decayed; growth when trending)."""
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
