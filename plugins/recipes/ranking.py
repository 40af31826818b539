"""The ``ranking`` recipe: re-rank a list of candidate items for one user, like Amazon
Personalize's Personalized-Ranking. The candidates come from the campaign (``candidates``),
from another recipe (``candidates_from``, its top ``pool``), or from a plugin calling
``rerank`` with its own list; the order comes from ``personalize``'s scores."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import engine
from engine import hookimpl
from engine.hookspecs import RecipeFactory
from engine.types import Interaction, Item, Recipe, Recipient
from plugins.recipes.base import check_positive
from plugins.recipes.personalize import PersonalizeRecipe


class RankingRecipe(PersonalizeRecipe):
    """Orders candidates by the user's personalize scores; ties keep the candidates' order.

    Only candidates are ever recommended, so a list is short when fewer than ``k``
    candidates remain outside ``exclude``. Without ``candidates`` the top ``pool`` of
    ``candidates_from`` (default ``popularity``) are re-ranked; ``candidates_params`` are
    that recipe's parameters. Every other parameter is ``personalize``'s.
    """

    name = "ranking"

    def __init__(
        self,
        candidates: Sequence[str] | None = None,
        candidates_from: str | None = None,
        candidates_params: Mapping[str, Any] | None = None,
        pool: int = 100,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        check_positive("pool", pool, whole=True)
        if candidates is not None and candidates_from is not None:
            raise ValueError("give candidates or candidates_from, not both")
        if candidates is not None and (
            isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates)
        ):
            raise ValueError(f"candidates must be a list of item ids, got {candidates!r}")
        self.candidates = list(candidates) if candidates is not None else None
        self.pool = int(pool)
        self._source: Recipe | None = None
        if self.candidates is None:
            # Built now, so a misspelled recipe name fails when the campaign loads.
            self._source = engine.recipe(
                candidates_from or "popularity", **dict(candidates_params or {})
            )

    def fit(
        self,
        interactions: Iterable[Interaction],
        items: Iterable[Item] = (),
        users: Iterable[Recipient] = (),
    ) -> None:
        """Fit the scores and, when candidates come from a recipe, that recipe too."""
        events, catalogue, people = list(interactions), list(items), list(users)
        super().fit(events, catalogue, people)
        if self._source is not None:
            from engine.recommendation.fits import fit_recipe

            fit_recipe(self._source, events, catalogue, people)

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The user's best ``k`` candidates outside ``exclude``."""
        excluded = set(exclude)
        if self._source is not None:
            pool = self._source.recommend(user_id, max(self.pool, k), exclude=excluded)
        else:
            pool = self.candidates or []
        return self.rerank(user_id, pool, k, excluded)

    def rerank(
        self,
        user_id: str,
        candidates: Sequence[str],
        k: int | None = None,
        exclude: Iterable[str] = (),
    ) -> list[str]:
        """``candidates`` (minus ``exclude``) best first for ``user_id``; the first ``k``."""
        skip = set(exclude)
        unique = [c for c in dict.fromkeys(candidates) if c not in skip]
        scores = self.score(user_id, unique)
        order = sorted(range(len(unique)), key=lambda n: (-scores[unique[n]], n))
        ranked = [unique[n] for n in order]
        return ranked if k is None else ranked[:k]


@hookimpl
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register the ``ranking`` recipe."""
    register("ranking", RankingRecipe)
