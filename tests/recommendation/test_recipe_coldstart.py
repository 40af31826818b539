"""Cold start: a new item with attributes and no interactions reaches the configured share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.types import Interaction, Item
from plugins.recipes.personalize import PersonalizeRecipe

T0 = datetime(2025, 6, 1, tzinfo=UTC)
USERS = 2000


def _data() -> tuple[list[Interaction], list[Item]]:
    catalogue = [Item(f"i{n}", {"genre": f"g{n % 4}"}) for n in range(40)]
    events = [
        Interaction(f"u{u}", f"i{(u + step) % 40}", T0 + timedelta(minutes=step), 1.0, "view")
        for u in range(USERS)
        for step in range(4)
    ]
    return events, catalogue


def _share_showing(recipe: PersonalizeRecipe, item: str, k: int = 5) -> float:
    shown = sum(item in recipe.recommend(f"u{u}", k) for u in range(USERS))
    return shown / USERS


@pytest.mark.parametrize("exploration", [0.05, 0.2])
def test_new_item_reaches_about_the_exploration_share(exploration: float) -> None:
    events, catalogue = _data()
    recipe = PersonalizeRecipe(exploration=exploration)
    recipe.fit(events, [*catalogue, Item("brand-new", {"genre": "g1"})])
    assert recipe.new_items() == ["brand-new"]
    share = _share_showing(recipe, "brand-new")
    # Binomial spread at n=2000 is under 1 point; "within a few points" is 2.5.
    assert abs(share - exploration) < 0.025, share


def test_without_exploration_a_new_item_is_not_shown() -> None:
    events, catalogue = _data()
    recipe = PersonalizeRecipe()
    recipe.fit(events, [*catalogue, Item("brand-new", {"genre": "g1"})])
    assert _share_showing(recipe, "brand-new") == 0.0


def test_exploring_users_get_the_new_item_most_like_their_history() -> None:
    events, catalogue = _data()
    newcomers = [Item("new-g0", {"genre": "g0"}), Item("new-g1", {"genre": "g1"})]
    recipe = PersonalizeRecipe(exploration=1.0, exploration_slot=0)
    recipe.fit(events, [*catalogue, *newcomers])
    # u0's last items are i0..i3, one per genre, so both match; u4 took only g0..g3 too.
    only_g0 = [Interaction("fan", "i0", T0, 1.0), Interaction("fan", "i4", T0, 1.0)]
    recipe.fit([*events, *only_g0], [*catalogue, *newcomers])
    assert recipe.recommend("fan", 3)[0] == "new-g0"
    # The slot is kept, the list keeps its length, and an excluded new item is not forced in.
    assert len(recipe.recommend("fan", 3)) == 3
    assert "new-g0" not in recipe.recommend("fan", 3, exclude=["new-g0"])
    assert recipe.recommend("fan", 3, exclude=["new-g0"])[0] == "new-g1"


def test_the_same_users_explore_on_every_worker() -> None:
    events, catalogue = _data()
    one = PersonalizeRecipe(exploration=0.1, seed=3)
    two = PersonalizeRecipe(exploration=0.1, seed=3)
    for recipe in (one, two):
        recipe.fit(events, [*catalogue, Item("brand-new", {"genre": "g1"})])
    users = [f"u{u}" for u in range(300)]
    assert [one.recommend(u, 5) for u in users] == [two.recommend(u, 5) for u in users]
