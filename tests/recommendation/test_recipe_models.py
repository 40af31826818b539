"""The matrix recipes (sims, personalize, ranking) and popularity's decay and trending modes."""

from __future__ import annotations

import pickle
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.recommendation.fits import fit_recipe
from engine.recommendation.offline import evaluate, leave_last_out
from engine.types import Interaction, Item, Recipe, Recipient
from plugins.recipes.personalize import PersonalizeRecipe
from plugins.recipes.popularity import PopularityRecipe
from plugins.recipes.ranking import RankingRecipe
from plugins.recipes.sims import SimsRecipe

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from recipes import synthetic  # noqa: E402

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def ev(user: str, item: str, minutes: float, kind: str = "view", value: float = 1.0) -> Interaction:
    return Interaction(user, item, T0 + timedelta(minutes=minutes), value, kind)


# Two tastes: people who take a then b then c, and people who take x then y.
CHAINS = [ev(f"p{n}", item, step) for n in range(6) for step, item in enumerate("abc")] + [
    ev(f"q{n}", item, step) for n in range(6) for step, item in enumerate("xy")
]


def test_sims_finds_items_taken_by_the_same_users() -> None:
    recipe = SimsRecipe()
    recipe.fit(CHAINS)
    assert set(recipe.similar("a", 2)) == {"b", "c"}
    assert recipe.similar("x", 1) == ["y"]
    assert recipe.similar("unknown", 3) == []
    # A newcomer who took "x" is offered "y" first; the rest fills by popularity.
    recipe.fit([*CHAINS, ev("new", "x", 10)])
    assert recipe.recommend("new", 3, exclude=["x"])[0] == "y"


def test_personalize_follows_the_order_of_a_history() -> None:
    recipe = PersonalizeRecipe()
    recipe.fit([*CHAINS, ev("me", "a", 10), ev("me", "b", 11)])
    # After a then b, this crowd took c next.
    assert recipe.recommend("me", 1, exclude=["a", "b"]) == ["c"]


def test_recent_items_weigh_more_than_old_ones() -> None:
    recipe = PersonalizeRecipe(recent=2, decay=0.2)
    recipe.fit([*CHAINS, ev("me", "a", 10), ev("me", "x", 20)])
    assert recipe.recommend("me", 1, exclude=["a", "x"]) == ["y"]
    recipe.fit([*CHAINS, ev("me", "x", 10), ev("me", "a", 20)])
    assert recipe.recommend("me", 1, exclude=["a", "x"]) in (["b"], ["c"])


def test_answers_are_never_short_while_the_catalogue_has_items() -> None:
    catalogue = [Item(i) for i in "abcxyz"]  # z: no interactions at all
    for recipe in (SimsRecipe(), PersonalizeRecipe()):
        recipe.fit(CHAINS, catalogue)
        assert sorted(recipe.recommend("p0", 6)) == sorted("abcxyz")
        assert sorted(recipe.recommend("nobody", 10, exclude=["a"])) == sorted("bcxyz")
        assert recipe.recommend("p0", 0) == []


def test_kind_weights_count_purchases_more() -> None:
    events = [ev(f"u{n}", "viewed", 0, "view") for n in range(3)]
    events += [ev(f"v{n}", "bought", 0, "purchase") for n in range(2)]
    plain = SimsRecipe()
    plain.fit(events)
    assert plain.recommend("nobody", 1) == ["viewed"]
    weighted = SimsRecipe(kind_weights={"purchase": 5})
    weighted.fit(events)
    assert weighted.recommend("nobody", 1) == ["bought"]
    ignoring = SimsRecipe(kind_weights={"view": 0})
    ignoring.fit(events)
    assert ignoring.recommend("nobody", 2) == ["bought"]  # views are not counted at all


def test_personalize_uses_item_attributes() -> None:
    # "c1" and "c2" co-occur equally with "a"; the user's history is all in genre "g".
    items = [Item("a", {"genre": "g"}), Item("c1", {"genre": "h"}), Item("c2", {"genre": "g"})]
    items += [Item(f"pad{n}", {"genre": "other"}) for n in range(3)]
    data = [ev(f"u{n}", "a", 0) for n in range(4)]
    data += [ev("u0", "c1", 1), ev("u1", "c2", 1)]
    data += [ev("me", "a", 5)]
    recipe = PersonalizeRecipe(attribute_weight=0.5, window=1, similarity_weight=1.0)
    recipe.fit(data, items)
    assert recipe.recommend("me", 1, exclude=["a"]) == ["c2"]
    blind = PersonalizeRecipe(attribute_weight=0.0, window=1)
    blind.fit(data, items)
    assert blind.recommend("me", 2, exclude=["a"]) == ["c1", "c2"]  # a tie, by popularity/id


def test_a_user_without_history_gets_what_their_segment_likes() -> None:
    people = [Recipient(f"fr{n}", f"fr{n}@x.org", {"country": "FR"}) for n in range(3)]
    people += [Recipient(f"de{n}", f"de{n}@x.org", {"country": "DE"}) for n in range(4)]
    people += [Recipient("newfr", "newfr@x.org", {"country": "FR"})]
    people += [Recipient("newde", "newde@x.org", {"country": "DE"})]
    data = [ev(f"fr{n}", "croissant", n) for n in range(3)]
    data += [ev(f"de{n}", "pretzel", n) for n in range(4)]
    recipe = PersonalizeRecipe(segment_by=["country"])
    recipe.fit(data, (), people)
    assert recipe.recommend("newfr", 1) == ["croissant"]
    assert recipe.recommend("newde", 1) == ["pretzel"]
    assert recipe.recommend("stranger", 1) == ["pretzel"]  # no segment: overall popularity


def test_ranking_reorders_the_given_candidates_only() -> None:
    recipe = RankingRecipe(candidates=["x", "c", "b", "zzz"])
    recipe.fit([*CHAINS, ev("me", "a", 10)])
    ranked = recipe.recommend("me", 3, exclude=["a"])
    assert ranked[:2] in (["b", "c"], ["c", "b"])  # what follows "a" for this crowd
    assert set(ranked) <= {"x", "c", "b", "zzz"}
    assert recipe.rerank("me", ["x", "b"], 1) == ["b"]
    assert recipe.recommend("me", 10, exclude=["b"]) == [*recipe.rerank("me", ["x", "c", "zzz"])]


def test_ranking_takes_candidates_from_another_recipe() -> None:
    recipe = RankingRecipe(candidates_from="popularity", pool=3)
    recipe.fit([*CHAINS, ev("me", "x", 10)])
    assert len(recipe.recommend("me", 2, exclude=["x"])) == 2
    with pytest.raises(engine.errors.PluginError, match="no-such"):
        RankingRecipe(candidates_from="no-such")
    with pytest.raises(ValueError, match="not both"):
        RankingRecipe(candidates=["a"], candidates_from="sims")


def test_fits_survive_pickling() -> None:
    for recipe in (SimsRecipe(), PersonalizeRecipe(), RankingRecipe(), PopularityRecipe()):
        recipe.fit(CHAINS)
        again: Recipe = pickle.loads(pickle.dumps(recipe))
        assert again.recommend("p0", 3) == recipe.recommend("p0", 3)


@pytest.mark.parametrize(
    ("factory", "params"),
    [
        (SimsRecipe, {"recent": 0}),
        (SimsRecipe, {"decay": 1.5}),
        (SimsRecipe, {"alpha": 2}),
        (SimsRecipe, {"kind_weights": {"view": -1}}),
        (PersonalizeRecipe, {"exploration": 1.5}),
        (PersonalizeRecipe, {"window": 2.5}),
        (PersonalizeRecipe, {"attribute_weight": -1}),
        (PersonalizeRecipe, {"exploration_slot": -1}),
        (PopularityRecipe, {"mode": "hot"}),
        (PopularityRecipe, {"mode": "trending"}),
        (PopularityRecipe, {"half_life_days": 0}),
        (RankingRecipe, {"candidates": "abc"}),
    ],
)
def test_bad_parameters_are_named(factory: Any, params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(params)).split("_")[0]):
        factory(**params)


def test_unfitted_recipes_say_to_fit_first() -> None:
    for recipe in (SimsRecipe(), PersonalizeRecipe()):
        with pytest.raises(RuntimeError, match="fit"):
            recipe.recommend("u", 3)


def test_popularity_half_life_favours_recent_interactions() -> None:
    old = [ev(f"o{n}", "old", -60 * 24 * 30) for n in range(4)]  # 30 days earlier
    new = [ev(f"n{n}", "new", 0) for n in range(3)]
    assert _top(PopularityRecipe(), old + new) == "old"
    decayed = PopularityRecipe(half_life_days=7)
    assert _top(decayed, old + new) == "new"
    assert decayed.count("new") == pytest.approx(3.0)
    assert decayed.count("old") == pytest.approx(4 * 0.5 ** (30 / 7))


def test_popularity_trending_ranks_growth_over_the_previous_window() -> None:
    day = 60 * 24
    steady = [ev(f"s{n}", "steady", -day * 10) for n in range(5)]
    steady += [ev(f"t{n}", "steady", 0) for n in range(5)]
    rising = [ev(f"r{n}", "rising", -day * 10) for n in range(1)]
    rising += [ev(f"x{n}", "rising", 0) for n in range(4)]
    recipe = PopularityRecipe(mode="trending", window_days=7)
    assert _top(recipe, steady + rising) == "rising"
    assert recipe.count("rising") == 3.0 and recipe.count("steady") == 0.0
    assert _top(PopularityRecipe(window_days=7), steady + rising) == "steady"


def _top(recipe: PopularityRecipe, data: list[Interaction]) -> str:
    recipe.fit(data)
    return recipe.recommend("anyone", 1)[0]


def test_order_aware_recipes_beat_popularity_on_ordered_data() -> None:
    interactions, items, users = synthetic(300)
    split = leave_last_out(interactions)
    scores = {
        name: evaluate(name, engine.recipe(name), split, items, users).hr
        for name in ("popularity", "sims", "personalize")
    }
    assert scores["sims"] > 2 * scores["popularity"], scores
    assert scores["personalize"] >= scores["sims"], scores


def test_leave_last_out_holds_out_each_users_newest_interaction() -> None:
    data = [ev("u", "first", 0), ev("u", "last", 5), ev("u", "middle", 2), ev("solo", "x", 1)]
    data += [ev("v", "tie-a", 3), ev("v", "tie-b", 3)]
    split = leave_last_out(data)
    assert split.held_out == {"u": "last", "v": "tie-b"}  # a tie: the later-arrived one
    assert split.earlier == {"u": {"first", "middle"}, "solo": {"x"}, "v": {"tie-a"}}
    assert len(split.train) == 4


@pytest.mark.parametrize("name", ["sims", "personalize"])
def test_precomputed_answers_equal_a_full_ranking(name: str) -> None:
    interactions, items, users = synthetic(120)
    fast, full = engine.recipe(name), engine.recipe(name)
    full.answer_depth = 0  # every answer ranked from scratch
    fast.answer_depth = 8  # short lists, so a large exclude falls back to the full ranking
    for recipe in (fast, full):
        fit_recipe(recipe, interactions, items, users)
    rng = random.Random(3)
    catalogue = [item.item_id for item in items]
    for user in [f"u{n}" for n in range(0, 120, 7)] + ["nobody"]:
        for size in (0, 3, 20):
            exclude = set(rng.sample(catalogue, size))
            for k in (1, 5, 12):
                assert fast.recommend(user, k, exclude) == full.recommend(user, k, exclude)


def test_ranking_scores_kept_by_fit_equal_fresh_scores() -> None:
    interactions, items, users = synthetic(120)
    recipe = RankingRecipe(candidates_from="sims", pool=15)
    recipe.kept_scores = 6  # small, so some candidates fall below the kept ones
    fit_recipe(recipe, interactions, items, users)
    fresh = PersonalizeRecipe()
    fit_recipe(fresh, interactions, items, users)
    catalogue = [item.item_id for item in items] + ["not-an-item"]
    for user in [f"u{n}" for n in range(0, 120, 5)] + ["nobody"]:
        assert recipe.score(user, catalogue) == fresh.score(user, catalogue)
        assert recipe.score(user, catalogue[:3]) == fresh.score(user, catalogue[:3])
        ranked = sorted(catalogue[:20], key=lambda i: -fresh.score(user, [i])[i])
        assert recipe.rerank(user, ranked, 20) == ranked


def test_ranking_from_pools_ranked_at_fit_equals_asking_the_source() -> None:
    interactions, items, users = synthetic(120)
    fast = RankingRecipe(candidates_from="sims", pool=12)
    slow = RankingRecipe(candidates_from="sims", pool=12)
    fast._source.answer_depth = 10  # type: ignore[union-attr]  # short: big excludes fall back
    for recipe in (fast, slow):
        fit_recipe(recipe, interactions, items, users)
    slow._pools = []  # every answer asks the source and scores afresh
    assert any(len(ranked) for ranked, _ in fast._pools)
    rng = random.Random(11)
    catalogue = [item.item_id for item in items]
    for user in [f"u{n}" for n in range(0, 120, 7)] + ["nobody"]:
        for size in (0, 4, 25):
            exclude = set(rng.sample(catalogue, size))
            for k in (0, 1, 5, 15):
                assert fast.recommend(user, k, exclude) == slow.recommend(user, k, exclude)
