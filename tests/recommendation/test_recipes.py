"""The built-in recipes, in memory (no database needed)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pluggy
import pytest

from engine import hookspecs
from engine.types import Interaction, Item, Recipe
from plugins.recipes import popularity
from plugins.recipes.popularity import PopularityRecipe

T0 = datetime(2024, 5, 1, 12, 0)


def event(user: str, item: str, days_ago: float = 0.0, value: float = 1.0) -> Interaction:
    return Interaction(user, item, T0 - timedelta(days=days_ago), value)


HISTORY = [
    event("u1", "b"),
    event("u2", "b"),
    event("u3", "b"),
    event("u1", "a"),
    event("u2", "a"),
    event("u3", "c"),
    event("u4", "c"),
    event("u4", "d"),
]


def test_ranks_by_count_then_item_id() -> None:
    recipe = PopularityRecipe()
    recipe.fit(HISTORY)
    assert recipe.recommend("nobody", 10) == ["b", "a", "c", "d"]  # a and c tie at 2
    assert recipe.count("b") == 3.0


def test_counts_are_the_sum_of_values() -> None:
    recipe = PopularityRecipe()
    recipe.fit([*HISTORY, event("u5", "d", value=4.5)])
    assert recipe.recommend("nobody", 2) == ["d", "b"]


def test_catalogue_items_without_interactions_come_last_by_id() -> None:
    recipe = PopularityRecipe()
    catalogue = [Item(item_id) for item_id in ("z", "a", "b", "c", "y")]
    recipe.fit(HISTORY, catalogue)
    # "d" left the catalogue, so an alert cannot show it.
    assert recipe.recommend("nobody", 10) == ["b", "a", "c", "y", "z"]


def test_excludes_the_exclude_list_but_not_the_users_own_items() -> None:
    # Dropping a user's own items is the campaign filters' job (exclude_interacted).
    recipe = PopularityRecipe()
    recipe.fit(HISTORY)
    assert recipe.recommend("u1", 10) == ["b", "a", "c", "d"]
    assert recipe.recommend("u1", 10, exclude=["b", "a", "c"]) == ["d"]
    assert recipe.recommend("u1", 1, exclude=["b"]) == ["a"]
    assert recipe.recommend("u4", 0) == []


def test_window_counts_only_recent_interactions() -> None:
    old = [event(f"old{n}", "vintage", days_ago=30) for n in range(5)]
    recipe = PopularityRecipe(window_days=7)
    recipe.fit([*old, *HISTORY])
    # Outside the window "vintage" counts nothing, so it joins the tail, by id.
    assert recipe.recommend("nobody", 10) == ["b", "a", "c", "d", "vintage"]
    assert recipe.count("vintage") == 0.0
    unwindowed = PopularityRecipe()
    unwindowed.fit([*old, *HISTORY])
    assert unwindowed.recommend("nobody", 1) == ["vintage"]


def test_window_ends_at_the_newest_interaction_and_accepts_aware_times() -> None:
    recipe = PopularityRecipe(window_days=1)
    aware = Interaction("u9", "fresh", (T0 + timedelta(days=100)).replace(tzinfo=UTC))
    recipe.fit([*HISTORY, aware])
    assert recipe.recommend("nobody", 10) == ["fresh", "a", "b", "c", "d"]


def test_min_count_moves_rare_items_to_the_tail() -> None:
    recipe = PopularityRecipe(min_count=3)
    recipe.fit(HISTORY)
    assert recipe.recommend("nobody", 10) == ["b", "a", "c", "d"]
    recipe.fit([*HISTORY, event("u9", "d", value=5)])
    assert recipe.recommend("nobody", 10) == ["d", "b", "a", "c"]


def test_same_ranking_whatever_the_order_of_the_interactions() -> None:
    values = [0.1, 0.2, 0.3, 0.7, 0.15, 0.05]
    data = [event(f"u{n}", "x", value=v) for n, v in enumerate(values)]
    data += [event(f"v{n}", "w", value=v) for n, v in enumerate(reversed(values))]
    rankings = set()
    for seed in range(20):
        shuffled = data[:]
        random.Random(seed).shuffle(shuffled)
        recipe = PopularityRecipe()
        recipe.fit(shuffled)
        rankings.add(tuple(recipe.recommend("nobody", 5)))
    assert rankings == {("w", "x")}  # an exact tie, broken by id


def test_similar_returns_the_most_popular_others() -> None:
    recipe = PopularityRecipe()
    recipe.fit(HISTORY)
    assert recipe.similar("b", 2) == ["a", "c"]
    assert recipe.similar("unknown", 2) == ["b", "a"]


def test_refit_replaces_the_previous_model() -> None:
    recipe = PopularityRecipe()
    recipe.fit(HISTORY)
    recipe.fit([event("u1", "q")])
    assert recipe.recommend("u2", 10) == ["q"]
    assert recipe.recommend("u1", 10, exclude=["q"]) == []


def test_unfitted_recipe_refuses_to_recommend() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        PopularityRecipe().recommend("u1", 3)


@pytest.mark.parametrize("params", [{"window_days": 0}, {"window_days": -1}, {"min_count": 0}])
def test_bad_parameters(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PopularityRecipe(**params)


def test_registered_as_popularity_and_is_a_recipe() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(popularity)
    pm.check_pending()
    registered: dict[str, Callable[..., Any]] = {}
    pm.hook.register_recipes(register=registered.__setitem__)
    assert registered == {"popularity": PopularityRecipe}
    assert isinstance(registered["popularity"](window_days=3), Recipe)
