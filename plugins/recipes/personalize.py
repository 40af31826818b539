"""The ``personalize`` recipe: a user's next items from the order and recency of their history
(Amazon Personalize's HRNN), their items' and their own attributes (HRNN-Metadata), and a
configured share of exposure for new items (HRNN-Coldstart).

Three signals are mixed, each scaled to a maximum of 1 first:
- what tends to come *next*: directed transitions from each item to the items the same user
  took within the following ``window`` steps (a step further weighs ``gap_decay`` less);
- what goes *together*: the ``sims`` co-occurrence neighbours (``similarity_weight``);
- what it *is*: the items' categorical attributes against the user's recent ones
  (``attribute_weight``).
All three read the user's last ``recent`` items, the newest weighing 1, then ``decay``...
A user with no history gets what is popular in their segments (``segment_by``: recipient
attributes, e.g. country or plan), and then overall popularity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from engine import hookimpl
from engine.hookspecs import RecipeFactory
from engine.types import Interaction, Item, Recipient
from plugins.recipes.attributes import affinity, categorical_names, feature_matrix, segment_keys
from plugins.recipes.base import ScoredRecipe, check_positive, check_share
from plugins.recipes.history import History, recent_weights, top_rows, weighted_rows
from plugins.recipes.sims import cooccurrence_similarity

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from plugins.recipes.history import FloatArray


def transition_matrix(history: History, window: int, gap_decay: float, keep: int) -> sp.csr_matrix:
    """Items x items: how often the column item followed the row item, normalized both ways."""
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np
    import scipy.sparse as sp

    if not history.sequences:
        return sp.csr_matrix((history.n_items, history.n_items))
    items = np.concatenate(history.sequences)
    owners = np.repeat(np.arange(len(history.sequences)), [len(s) for s in history.sequences])
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for gap in range(1, window + 1):
        same_user = owners[:-gap] == owners[gap:]
        rows.append(items[:-gap][same_user])
        cols.append(items[gap:][same_user])
        data.append(np.full(int(same_user.sum()), gap_decay ** (gap - 1)))
    shape = (history.n_items, history.n_items)
    counts = sp.csr_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape
    )
    counts.sum_duplicates()
    counts.setdiag(0)
    counts.eliminate_zeros()
    # sqrt of both degrees: an item everyone takes next says little about this user.
    out_degree = np.asarray(counts.sum(axis=1)).ravel() + 1.0
    in_degree = np.asarray(counts.sum(axis=0)).ravel() + 1.0
    scaled = sp.diags(out_degree**-0.5) @ counts @ sp.diags(in_degree**-0.5)
    return top_rows(scaled.tocsr(), keep)


def _unit(scores: FloatArray) -> FloatArray:
    top = scores.max() if len(scores) else 0.0
    return scores / top if top > 0 else scores


def _share_of(seed: int, key: str) -> float:
    """A stable number in [0, 1) per key: which users explore, the same on every worker."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class PersonalizeRecipe(ScoredRecipe):
    """Next items for a user from their ordered history, attributes and segment.

    ``exploration`` is the share of users whose list gets one new item (no interactions
    yet) at position ``exploration_slot``: the one whose attributes best match the user's
    recent items. Which users explore is a stable hash of ``seed`` and the user id.
    """

    name = "personalize"

    def __init__(
        self,
        recent: int = 5,
        decay: float = 0.7,
        window: int = 10,
        gap_decay: float = 0.8,
        similarity_weight: float = 1.0,
        attribute_weight: float = 0.1,
        segment_weight: float = 0.0,
        item_attributes: Sequence[str] | None = None,
        segment_by: Sequence[str] | None = None,
        exploration: float = 0.0,
        exploration_slot: int = 2,
        seed: int = 0,
        neighbours: int = 200,
        kind_weights: Mapping[str, float] | None = None,
    ) -> None:
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np
        import scipy.sparse as sp

        super().__init__(kind_weights)
        for label, whole in (("recent", recent), ("window", window), ("neighbours", neighbours)):
            check_positive(label, whole, whole=True)
        for label, share in (
            ("decay", decay),
            ("gap_decay", gap_decay),
            ("exploration", exploration),
        ):
            check_share(label, share)
        for name, value in (
            ("similarity_weight", similarity_weight),
            ("attribute_weight", attribute_weight),
            ("segment_weight", segment_weight),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if isinstance(exploration_slot, bool) or not isinstance(exploration_slot, int):
            raise ValueError(f"exploration_slot must be a whole number, got {exploration_slot!r}")
        if exploration_slot < 0:
            raise ValueError(f"exploration_slot must be >= 0, got {exploration_slot!r}")
        self.recent, self.decay = int(recent), float(decay)
        self.window, self.gap_decay = int(window), float(gap_decay)
        self.similarity_weight = float(similarity_weight)
        self.attribute_weight = float(attribute_weight)
        self.segment_weight = float(segment_weight)
        self.item_attributes = list(item_attributes) if item_attributes is not None else None
        self.segment_by = list(segment_by) if segment_by is not None else None
        self.exploration, self.exploration_slot = float(exploration), exploration_slot
        self.seed, self.neighbours = int(seed), int(neighbours)
        self._transitions: sp.csr_matrix | None = None
        self._similarity: sp.csr_matrix | None = None
        self._features: sp.csr_matrix = sp.csr_matrix((0, 0))
        self._segment_names: list[str] = []
        self._segment_scores: dict[tuple[str, str], FloatArray] = {}
        self._user_segments: dict[str, list[tuple[str, str]]] = {}
        self._cold: np.ndarray = np.zeros(0, dtype=np.int64)
        self._users: list[Recipient] = []

    def fit(
        self,
        interactions: Iterable[Interaction],
        items: Iterable[Item] = (),
        users: Iterable[Recipient] = (),
    ) -> None:
        """Fit on the interactions, the catalogue and (for segments) the recipients."""
        self._users = list(users)
        try:
            super().fit(interactions, items)
        finally:
            self._users = []

    def fit_model(self, history: History) -> None:
        """Fit transitions, co-occurrence, item features and the segments on ``history``."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        self._transitions = transition_matrix(history, self.window, self.gap_decay, self.neighbours)
        self._similarity = cooccurrence_similarity(history, 0.5, self.neighbours)
        names = categorical_names(history.attributes, self.item_attributes)
        self._features = feature_matrix(history.attributes, names)
        counts = history.counts()
        self._cold = np.flatnonzero(history.recommendable & (counts <= 0))
        self._fit_segments(history)

    def _fit_segments(self, history: History) -> None:
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        people = self._users
        rows = [person.attributes for person in people]
        self._segment_names = categorical_names(rows, self.segment_by)
        members: dict[tuple[str, str], list[int]] = {}
        self._user_segments = {}
        for person in people:
            keys = segment_keys(person.attributes, self._segment_names)
            self._user_segments[person.recipient_id] = keys
            row = history.user_index.get(person.recipient_id)
            if row is None:
                continue
            for key in keys:
                members.setdefault(key, []).append(row)
        self._segment_scores = {
            key: _unit(np.asarray(history.matrix[rows_].sum(axis=0)).ravel())
            for key, rows_ in members.items()
        }

    # -- scoring ------------------------------------------------------------------------
    def _segment_score(self, user_id: str) -> FloatArray:
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        scores = np.zeros(self.history.n_items)
        for key in self._user_segments.get(user_id, ()):
            found = self._segment_scores.get(key)
            if found is not None:
                scores += found
        return scores

    def user_scores(self, user_id: str) -> FloatArray:
        """Transitions + co-occurrence + attributes of the recent items; segments otherwise."""
        history = self.history
        assert self._transitions is not None and self._similarity is not None
        sequence = history.sequence(user_id)
        if not len(sequence):
            return self._segment_score(user_id)
        chosen, weights = recent_weights(sequence, self.recent, self.decay)
        scores = _unit(weighted_rows(self._transitions, chosen, weights))
        if self.similarity_weight:
            similar = weighted_rows(self._similarity, chosen, weights)
            scores = scores + self.similarity_weight * _unit(similar)
        if self.attribute_weight and self._features.shape[1]:
            liked = affinity(self._features, chosen, weights)
            scores = scores + self.attribute_weight * _unit(liked) * (scores > 0)
        if self.segment_weight:
            scores = scores + self.segment_weight * _unit(self._segment_score(user_id))
        return scores

    def item_scores(self, index: int) -> FloatArray:
        """What follows or goes with the item at ``index``."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        assert self._transitions is not None and self._similarity is not None
        one, unit = np.asarray([index]), np.ones(1)
        after = weighted_rows(self._transitions, one, unit)
        alike = weighted_rows(self._similarity, one, unit)
        return _unit(after) + self.similarity_weight * _unit(alike)

    # -- cold start -----------------------------------------------------------------------
    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The best ``k`` items; an exploring user gets one new item at ``exploration_slot``."""
        excluded = set(exclude)
        chosen = super().recommend(user_id, k, excluded)
        if k <= 0 or not len(self._cold) or _share_of(self.seed, user_id) >= self.exploration:
            return chosen
        newcomer = self._new_item_for(user_id, excluded)
        if newcomer is None or newcomer in chosen:
            return chosen
        chosen.insert(min(self.exploration_slot, k - 1), newcomer)
        return chosen[:k]

    def _new_item_for(self, user_id: str, excluded: set[str]) -> str | None:
        """The new item whose attributes best match the user's recent items."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        history = self.history
        cold = np.asarray([i for i in self._cold if history.item_ids[i] not in excluded])
        if not len(cold):
            return None
        chosen, weights = recent_weights(history.sequence(user_id), self.recent, self.decay)
        match = affinity(self._features, chosen, weights)[cold] if self._features.shape[1] else 0
        # A per-user tie-break spreads exposure over new items that match equally well.
        spread = np.array([_share_of(self.seed + 1, f"{user_id}\x00{i}") for i in cold])
        best = int(cold[np.argmax(match + 1e-6 * spread)])
        return history.item_ids[best]

    def new_items(self) -> list[str]:
        """The catalogue items with no interactions, which only exploration can show."""
        return [self.history.item_ids[i] for i in self._cold]


@hookimpl
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register the ``personalize`` recipe."""
    register("personalize", PersonalizeRecipe)
