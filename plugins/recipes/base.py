"""The shared life cycle of the built-in recipes: fit on a ``History``, score, rank, fill.

A subclass scores items for a user (and, where it can, for an item); this base turns the
scores into an answer of exactly ``k`` items whenever the catalogue has that many outside
``exclude``: scored items first, then the rest by popularity, so a filter downstream never
leaves an email short. Recipes do not drop a user's own items by themselves: campaigns do
that with their ``[filters]`` (``exclude_interacted``), as Amazon Personalize does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from engine.types import Interaction, Item
from plugins.recipes.history import (
    Fallback,
    History,
    blocked_mask,
    build_history,
    rank,
)

if TYPE_CHECKING:
    import numpy as np

    from plugins.recipes.history import FloatArray


def check_positive(name: str, value: float, *, whole: bool = False) -> None:
    """Reject a parameter that must be a positive number (a whole one when ``whole``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if whole and int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")


def check_share(name: str, value: float) -> None:
    """Reject a parameter that must lie in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


class ScoredRecipe:
    """Base of the matrix recipes: ``fit`` indexes, subclasses score, ``recommend`` ranks.

    ``fit`` also ranks every known user's first items once (``answer_depth`` plus as many
    as the user has items of their own, the usual ``exclude``), so ``recommend`` on the
    send path only walks that list past ``exclude`` (a few microseconds); it ranks in full
    only when ``exclude`` swallows the whole list.
    """

    name = "scored"
    answer_depth = 100

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        legacy = cls.__dict__.get("_fit")
        if legacy is not None and "fit_model" not in cls.__dict__:
            # a subclass written for the private hook of earlier releases keeps working
            warnings.warn(
                f"{cls.__qualname__}._fit: define fit_model instead (the extension point "
                "is public now; _fit goes in the next release)",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.fit_model = legacy  # type: ignore[method-assign]

    def __init__(self, kind_weights: Mapping[str, float] | None = None) -> None:
        for kind, weight in (kind_weights or {}).items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise ValueError(f"kind_weights.{kind} must be a number >= 0, got {weight!r}")
        self.kind_weights = dict(kind_weights or {})
        self._history: History | None = None
        self._fallback: Fallback | None = None
        self._answers: list[np.ndarray] = []  # per user index: the best items, best first

    # -- fitting ------------------------------------------------------------------------
    def fit(self, interactions: Iterable[Interaction], items: Iterable[Item] = ()) -> None:
        """Index the interactions and fit the model; replaces any earlier fit."""
        history = build_history(interactions, items, self.kind_weights)
        self._answers = []
        self.fit_model(history)
        self._history = history
        self._fallback = Fallback.by_counts(history, self._fallback_counts(history))
        self._answers = self._rank_known_users(history, self._fallback)

    def _rank_known_users(self, history: History, fallback: Fallback) -> list[np.ndarray]:
        """Each known user's best items, in ``recommend``'s order."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        if self.answer_depth <= 0:
            return []
        unrecommendable = ~history.recommendable
        answers = [np.zeros(0, dtype=np.int32)] * len(history.user_index)
        for user_id, row in history.user_index.items():
            depth = self.answer_depth + len(np.unique(history.sequences[row]))
            chosen = rank(self.user_scores(user_id), depth, unrecommendable, fallback)
            answers[row] = np.asarray(chosen, dtype=np.int32)
        return answers

    def fit_model(self, history: History) -> None:
        """Fit the model on ``history``: what a subclass overrides (``fit`` calls it with
        the indexed interactions, before ranking every known user's answers)."""

    def _fallback_counts(self, history: History) -> FloatArray:
        return history.counts()

    @property
    def history(self) -> History:
        """The fitted data; an unfitted recipe says which method to call first."""
        if self._history is None:
            raise RuntimeError(f"{type(self).__name__}.fit() must be called before recommending")
        return self._history

    # -- scoring (subclasses) ------------------------------------------------------------
    def user_scores(self, user_id: str) -> FloatArray:
        """A score per item index for ``user_id`` (0 means "no opinion")."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        return np.zeros(self.history.n_items)

    def item_scores(self, index: int) -> FloatArray:
        """A score per item index for the item at ``index`` (0 means "no opinion")."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        return np.zeros(self.history.n_items)

    # -- answers ------------------------------------------------------------------------
    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The ``k`` best items for ``user_id`` outside ``exclude``, filled by popularity."""
        history = self.history
        if k <= 0:
            return []
        row = history.user_index.get(user_id)
        answers = getattr(self, "_answers", [])  # absent from fits stored by earlier releases
        if row is not None and answers:
            # ``rank`` orders every item the same whatever is blocked, so the precomputed
            # order minus ``exclude`` is the answer, as long as it holds ``k`` items.
            skip = exclude if isinstance(exclude, set | frozenset) else set(exclude)
            ids, found = history.item_ids, []
            for index in answers[row][: k + len(skip)].tolist():  # at most len(skip) skipped
                item = ids[index]
                if item not in skip:
                    found.append(item)
                    if len(found) == k:
                        return found
            exclude = skip
        blocked = blocked_mask(history, exclude)
        assert self._fallback is not None
        chosen = rank(self.user_scores(user_id), k, blocked, self._fallback)
        return [history.item_ids[i] for i in chosen]

    def similar(self, item_id: str, k: int) -> list[str]:
        """The ``k`` items most like ``item_id`` ([] for an item the recipe does not know)."""
        history = self.history
        index = history.item_index.get(item_id)
        if index is None:
            return []
        blocked = blocked_mask(history, (), also=[index])
        assert self._fallback is not None
        chosen = rank(self.item_scores(index), k, blocked, self._fallback)
        return [history.item_ids[i] for i in chosen]

    def score(self, user_id: str, item_ids: Iterable[str]) -> dict[str, float]:
        """Scores of ``item_ids`` for ``user_id``; unknown items score 0 (for re-ranking)."""
        history = self.history
        scores = self.user_scores(user_id)
        return {
            item: float(scores[history.item_index[item]]) if item in history.item_index else 0.0
            for item in item_ids
        }

    def popularity_position(self, item_id: str) -> int:
        """The item's place in the popularity fallback (lower is more popular)."""
        history = self.history
        assert self._fallback is not None
        index = history.item_index.get(item_id)
        return int(self._fallback.position[index]) if index is not None else history.n_items
