"""A campaign's recipe through the engine: the ``filter_items`` hook and stored fits."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from engine import hookimpl
from engine.db import session_scope
from engine.models import RecipeFitRow
from engine.recommendation.recommender import campaign_recommender
from engine.types import Item


class NoEvenItems:
    """A plugin filter: never show items with an even number."""

    @hookimpl
    def filter_items(
        self, engine: Any, campaign: Any, user_id: str, items: list[Item]
    ) -> list[str]:
        return [i.item_id for i in items if int(i.item_id[1:]) % 2 == 0]


def test_filter_items_hook_drops_items_and_the_list_stays_full(sqlite_project: Any) -> None:
    engine = sqlite_project.engine(plugins=[NoEvenItems()])
    sqlite_project.seed(engine, people=2, items=12)
    recommender = campaign_recommender(engine, engine.campaign("alerts"), run_id="r1")
    answer = recommender.recommend("u000", 5)
    assert len(answer) == 5
    assert all(int(i[1:]) % 2 == 1 for i in answer), answer
    # A second worker of the same run loads the stored fit instead of fitting again.
    again = campaign_recommender(engine, engine.campaign("alerts"), run_id="r1")
    assert again.fit_info is not None and again.fit_info.reused
    with session_scope(engine.db) as session:
        assert len(session.scalars(select(RecipeFitRow)).all()) == 1
    engine.close()
