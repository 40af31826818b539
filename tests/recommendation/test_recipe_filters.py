"""Campaign filters: excluded items never pass, and lists are never short while eligible
items remain (a property test over random catalogues, histories, rules and recipes)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import engine
from engine.recommendation.filters import FilterConfig, passes_rules
from engine.recommendation.recommender import CampaignRecommender
from engine.types import Interaction, Item

NOW = datetime(2025, 6, 1, tzinfo=UTC)
CATEGORIES = ["books", "games", "garden"]
KINDS = ["view", "purchase"]


@st.composite
def items(draw: st.DrawFn) -> list[Item]:
    count = draw(st.integers(min_value=1, max_value=25))
    catalogue = []
    for n in range(count):
        attributes: dict[str, Any] = {}
        if draw(st.booleans()):
            attributes["category"] = draw(st.sampled_from(CATEGORIES))
        if draw(st.booleans()):
            attributes["price"] = draw(st.floats(min_value=0, max_value=100))
        if draw(st.booleans()):
            attributes["available"] = draw(st.booleans())
        if draw(st.booleans()):
            days = draw(st.integers(min_value=0, max_value=90))
            attributes["published"] = (NOW - timedelta(days=days)).isoformat()
        catalogue.append(Item(f"i{n}", attributes))
    return catalogue


@st.composite
def configs(draw: st.DrawFn) -> FilterConfig:
    low = draw(st.none() | st.floats(min_value=0, max_value=60))
    high = draw(st.none() | st.floats(min_value=40, max_value=100))
    if low is not None and high is not None and high < low:
        low, high = high, low  # an inverted range is a config error (tested elsewhere)
    return FilterConfig(
        exclude_interacted=draw(st.sampled_from([True, False, ["purchase"], ["view"]])),
        category_in=draw(st.none() | st.lists(st.sampled_from(CATEGORIES), max_size=2)),
        category_not_in=draw(st.lists(st.sampled_from(CATEGORIES), max_size=1)),
        price_min=low,
        price_max=high,
        available_only=draw(st.booleans()),
        newer_than=draw(st.none() | st.sampled_from(["30d", "60d"])),
    )


def _oracle_passes(config: FilterConfig, attributes: dict[str, Any]) -> bool:
    """The rules written out plainly, independent of engine.recommendation.filters."""
    category = attributes.get("category")
    if config.category_in is not None and category not in config.category_in:
        return False
    if category is not None and category in config.category_not_in:
        return False
    price = attributes.get("price")
    if config.price_min is not None or config.price_max is not None:
        if price is None:
            return False
        if config.price_min is not None and price < config.price_min:
            return False
        if config.price_max is not None and price > config.price_max:
            return False
    if config.available_only and attributes.get("available") is False:
        return False
    if config.newer_than is not None:
        published = attributes.get("published")
        if published is None or datetime.fromisoformat(published) < NOW - config.newer_than:
            return False
    return True


def _seen(events: list[Interaction], kinds: list[str] | None) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for event in events:
        if kinds is None or event.kind in kinds:
            seen.setdefault(event.user_id, set()).add(event.item_id)
    return seen


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalogue=items(),
    config=configs(),
    recipe_name=st.sampled_from(["popularity", "sims", "personalize", "ranking"]),
    history=st.lists(
        st.tuples(
            st.sampled_from(["u0", "u1", "u2"]),
            st.integers(min_value=0, max_value=30),
            st.sampled_from(KINDS),
        ),
        max_size=40,
    ),
    banned=st.sets(st.integers(min_value=0, max_value=30), max_size=6),
    k=st.integers(min_value=1, max_value=30),
)
def test_filters_never_let_an_excluded_item_through_nor_come_back_short(
    catalogue: list[Item],
    config: FilterConfig,
    recipe_name: str,
    history: list[tuple[str, int, str]],
    banned: set[int],
    k: int,
) -> None:
    events = [
        Interaction(user, f"i{item}", NOW - timedelta(minutes=len(history) - n), 1.0, kind)
        for n, (user, item, kind) in enumerate(history)
    ]
    params = {"candidates_from": "popularity", "pool": 100} if recipe_name == "ranking" else {}
    recipe = engine.recipe(recipe_name, **params)
    recipe.fit(events, catalogue)
    banned_ids = {f"i{n}" for n in banned}

    def plugin_filter(user_id: str, items: list[Item], **_: Any) -> list[Iterable[str]]:
        return [[i.item_id for i in items if i.item_id in banned_ids]]

    seen = _seen(events, config.interacted_kinds())
    recommender = CampaignRecommender(
        recipe,
        catalogue={i.item_id: i for i in catalogue},
        filters=config,
        seen=seen,
        hook=plugin_filter,
        now=NOW,
    )
    for user in ("u0", "u1", "u2", "stranger"):
        eligible = {
            i.item_id
            for i in catalogue
            if _oracle_passes(config, i.attributes)
            and i.item_id not in seen.get(user, set())
            and i.item_id not in banned_ids
        }
        answer = recommender.recommend(user, k)
        assert set(answer) <= eligible, (user, set(answer) - eligible)
        assert len(answer) == len(set(answer))
        assert len(answer) == min(k, len(eligible)), (user, answer, sorted(eligible))


def test_rules_read_prices_with_currencies_and_dates_as_iso_or_unix() -> None:
    config = FilterConfig(price_min=10, price_max=50, newer_than="7d")
    fresh = (NOW - timedelta(days=1)).isoformat()
    assert passes_rules(config, {"price": "30.00 EUR", "published": fresh}, NOW)
    assert passes_rules(config, {"price": "€12", "published": NOW.timestamp() - 3600}, NOW)
    assert not passes_rules(config, {"price": "77.00 EUR", "published": fresh}, NOW)
    assert not passes_rules(config, {"price": "free", "published": fresh}, NOW)
    assert not passes_rules(config, {"price": 20, "published": "2020-01-01"}, NOW)
    assert not passes_rules(config, {"price": 20}, NOW)  # no date: cannot be shown as new


def test_availability_and_categories() -> None:
    only = FilterConfig(available_only=True, category_in=["books"], category_not_in=["used"])
    assert passes_rules(only, {"category": "books"}, NOW)  # no availability flag: available
    assert passes_rules(only, {"category": ["books", "new"], "available": "in stock"}, NOW)
    assert not passes_rules(only, {"category": "books", "available": "sold out"}, NOW)
    assert not passes_rules(only, {"category": "books", "available": 0}, NOW)
    assert not passes_rules(only, {"category": ["books", "used"]}, NOW)
    assert not passes_rules(only, {"category": "games"}, NOW)
    assert not passes_rules(only, {}, NOW)


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ({"price_min": 50, "price_max": 10}, "price_max"),
        ({"newer_than": "soon"}, "newer_than"),
        ({"exclude_interacted": "purchase"}, "exclude_interacted"),
        ({"categories": ["a"]}, "categories"),
    ],
)
def test_bad_filter_tables_name_the_key(table: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError, match=names):
        FilterConfig.model_validate(table)
