"""The ``ranking`` recipe: re-rank a list of candidate items for one user, like Amazon
Personalize's Personalized-Ranking. The candidates come from the campaign (``candidates``),
from another recipe (``candidates_from``, its top ``pool``), or from a plugin calling
``rerank`` with its own list; the order comes from ``personalize``'s scores."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import engine
from engine import hookimpl
from engine.hookspecs import RecipeFactory
from engine.recommendation.fits import fit_recipe
from engine.types import Interaction, Item, Recipe, Recipient
from plugins.recipes.base import ScoredRecipe, check_positive
from plugins.recipes.personalize import PersonalizeRecipe

if TYPE_CHECKING:
    import numpy as np


class RankingRecipe(PersonalizeRecipe):
    """Orders candidates by the user's personalize scores; ties keep the candidates' order.

    Only candidates are ever recommended, so a list is short when fewer than ``k``
    candidates remain outside ``exclude``. Without ``candidates`` the top ``pool`` of
    ``candidates_from`` (default ``popularity``) are re-ranked; ``candidates_params`` are
    that recipe's parameters. Every other parameter is ``personalize``'s.
    """

    name = "ranking"
    answer_depth = 0  # answers depend on the candidates, not a fixed order per user
    kept_scores = 500  # per known user, the best scores kept by ``fit`` for re-ranking

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
        self._kept: list[tuple[np.ndarray, np.ndarray, bool]] = []
        self._pools: list[tuple[np.ndarray, np.ndarray]] = []
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
            fit_recipe(self._source, events, catalogue, people)
        self._kept, self._pools = [], []
        for user in self.history.user_index:
            scores = self.user_scores(user)
            self._kept.append(self._keep(scores))
            self._pools.append(self._pool_of(user, scores))

    def _pool_of(self, user_id: str, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The source's ranked answers for ``user_id`` (our item indices) and their scores;
        empty when the source ranks no list at fit (then ``recommend`` asks it each time)."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        source = self._source
        answers = getattr(source, "_answers", None)
        if not isinstance(source, ScoredRecipe) or not answers:
            return np.zeros(0, dtype=np.int32), np.zeros(0)
        row = source.history.user_index.get(user_id)
        if row is None:
            return np.zeros(0, dtype=np.int32), np.zeros(0)
        ours = self.history.item_index
        ranked = np.asarray([ours[source.history.item_ids[i]] for i in answers[row]], np.int32)
        return ranked, scores[ranked]

    def _from_pool(
        self, user_id: str, k: int, excluded: set[str] | frozenset[str]
    ) -> list[str] | None:
        """The answer from the pool ranked at fit, or None when it is too short for it."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        row = self.history.user_index.get(user_id)
        pools = getattr(self, "_pools", [])  # absent from fits stored by earlier releases
        if row is None or row >= len(pools) or not len(pools[row][0]):
            return None
        ranked, scores = pools[row]
        ids, want = self.history.item_ids, max(self.pool, k)
        pool: list[int] = []  # what the source answers: its ranking minus ``exclude``
        for place, index in enumerate(ranked[: want + len(excluded)].tolist()):
            if ids[index] not in excluded:
                pool.append(place)
                if len(pool) == want:
                    break
        else:
            return None
        chosen = np.asarray(pool)
        order = np.argsort(-scores[chosen], kind="stable")[:k]
        return [ids[i] for i in ranked[chosen[order]].tolist()]

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The user's best ``k`` candidates outside ``exclude``."""
        excluded = exclude if isinstance(exclude, set | frozenset) else set(exclude)
        if self._source is None:
            return self.rerank(user_id, self.candidates or [], k, excluded)
        fast = self._from_pool(user_id, k, excluded) if k > 0 else []
        if fast is not None:
            return fast
        # A recipe's answer is already unique and outside ``exclude``.
        pool = self._source.recommend(user_id, max(self.pool, k), exclude=excluded)
        return self._ordered(user_id, list(dict.fromkeys(pool)), k)

    def _keep(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """The nonzero scores (item indices sorted), at most ``kept_scores`` of the best."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        nonzero = np.flatnonzero(scores)
        capped = len(nonzero) > self.kept_scores
        if capped:
            best = np.argpartition(-scores[nonzero], self.kept_scores - 1)[: self.kept_scores]
            nonzero = np.sort(nonzero[best])
        return nonzero.astype(np.int32), scores[nonzero], capped

    def score(self, user_id: str, item_ids: Iterable[str]) -> dict[str, float]:
        """Scores of ``item_ids`` for ``user_id``; unknown items score 0 (for re-ranking)."""
        wanted = list(item_ids)
        return dict(zip(wanted, self._scores(user_id, wanted).tolist(), strict=True))

    def _scores(self, user_id: str, wanted: list[str]) -> np.ndarray:
        """The scores of ``wanted``, from the scores ``fit`` kept when it can."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        history = self.history
        row = history.user_index.get(user_id)
        lookup = history.item_index
        places = np.fromiter((lookup.get(i, -1) for i in wanted), np.int64, len(wanted))
        kept = getattr(self, "_kept", [])  # absent from fits stored by earlier releases
        if row is not None and row < len(kept):
            indices, values, capped = kept[row]
            if len(indices):
                at = np.minimum(np.searchsorted(indices, places), len(indices) - 1)
                found = indices[at] == places
                known = places >= 0
                # An item below the kept scores of a capped row: its score needs a full ranking.
                if not capped or bool(found[known].all()):
                    return np.where(found, values[at], 0.0)
            elif not capped:
                return np.zeros(len(wanted))
        scores = self.user_scores(user_id)
        return np.where(places >= 0, scores[np.maximum(places, 0)], 0.0)

    def rerank(
        self,
        user_id: str,
        candidates: Sequence[str],
        k: int | None = None,
        exclude: Iterable[str] = (),
    ) -> list[str]:
        """``candidates`` (minus ``exclude``) best first for ``user_id``; the first ``k``."""
        skip = exclude if isinstance(exclude, set | frozenset) else set(exclude)
        return self._ordered(user_id, [c for c in dict.fromkeys(candidates) if c not in skip], k)

    def _ordered(self, user_id: str, unique: list[str], k: int | None) -> list[str]:
        """``unique`` best first for ``user_id`` (ties keep their order); the first ``k``."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        order = np.argsort(-self._scores(user_id, unique), kind="stable")
        chosen = order if k is None else order[:k]
        return [unique[n] for n in chosen.tolist()]


@hookimpl
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register the ``ranking`` recipe."""
    register("ranking", RankingRecipe)
