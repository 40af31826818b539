"""What every built-in recipe fits on: interactions indexed as sparse matrices and sequences.

Items and users get dense integer indices; each user's items are kept in time order (ties
in the order they arrived), so order-aware recipes can read "the last few items". Kinds are
weighed by ``kind_weights`` (a kind absent from it weighs 1; a weight of 0 ignores it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from engine.models import as_utc
from engine.types import Interaction, Item

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    FloatArray = np.ndarray


@dataclass
class History:
    """Interactions as index structures; built once per fit, read by ``recommend``."""

    item_ids: list[str]
    item_index: dict[str, int]
    user_index: dict[str, int]
    sequences: list[np.ndarray]  # per user index: item indices, oldest first
    matrix: sp.csr_matrix  # users x items, summed weighted values
    times: np.ndarray  # per interaction row of ``events``: seconds since the epoch
    events_item: np.ndarray  # item index per kept interaction, oldest first
    recommendable: np.ndarray  # bool per item: in the catalogue (or everything seen)
    attributes: list[dict[str, object]]  # per item index
    newest: float  # seconds since the epoch of the newest interaction (0 when none)

    @property
    def n_items(self) -> int:
        """How many items are indexed (catalogue plus interacted)."""
        return len(self.item_ids)

    def sequence(self, user_id: str) -> np.ndarray:
        """The user's item indices, oldest first (empty for an unknown user)."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        row = self.user_index.get(user_id)
        return self.sequences[row] if row is not None else np.zeros(0, dtype=np.int64)

    def indices(self, item_ids: Iterable[str]) -> np.ndarray:
        """Indices of the known ``item_ids`` (unknown ones are dropped)."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        found = [self.item_index[i] for i in item_ids if i in self.item_index]
        return np.asarray(found, dtype=np.int64)

    def counts(self) -> FloatArray:
        """Summed weighted interaction values per item."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        return np.asarray(self.matrix.sum(axis=0)).ravel()


def build_history(
    interactions: Iterable[Interaction],
    items: Iterable[Item] = (),
    kind_weights: Mapping[str, float] | None = None,
) -> History:
    """Index ``interactions`` (and the catalogue ``items``) for fitting."""
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np
    import scipy.sparse as sp

    weights = dict(kind_weights or {})
    catalogue = list(items)
    item_ids: list[str] = []
    item_index: dict[str, int] = {}
    attributes: list[dict[str, object]] = []

    def index_of(item_id: str) -> int:
        found = item_index.get(item_id)
        if found is None:
            found = item_index[item_id] = len(item_ids)
            item_ids.append(item_id)
            attributes.append({})
        return found

    for item in catalogue:
        attributes[index_of(item.item_id)] = dict(item.attributes)
    user_index: dict[str, int] = {}
    users: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    times: list[float] = []
    for event in interactions:
        weight = weights.get(event.kind, 1.0)
        if weight == 0:
            continue
        users.append(user_index.setdefault(event.user_id, len(user_index)))
        cols.append(index_of(event.item_id))
        values.append(float(event.value) * weight)
        times.append(_seconds(event.timestamp))
    user_arr = np.asarray(users, dtype=np.int64)
    item_arr = np.asarray(cols, dtype=np.int64)
    time_arr = np.asarray(times, dtype=np.float64)
    order = np.lexsort((np.arange(len(user_arr)), time_arr))  # by time, then arrival
    user_arr, item_arr, time_arr = user_arr[order], item_arr[order], time_arr[order]
    value_arr = np.asarray(values, dtype=np.float64)[order]
    matrix = sp.csr_matrix(
        (value_arr, (user_arr, item_arr)), shape=(len(user_index), len(item_ids))
    )
    matrix.sum_duplicates()
    by_user = np.argsort(user_arr, kind="stable")  # keeps time order inside each user
    bounds = np.searchsorted(user_arr[by_user], np.arange(len(user_index) + 1))
    grouped = item_arr[by_user]
    sequences = [grouped[bounds[u] : bounds[u + 1]] for u in range(len(user_index))]
    recommendable = np.zeros(len(item_ids), dtype=bool)
    if catalogue:
        recommendable[[item_index[item.item_id] for item in catalogue]] = True
    else:
        recommendable[:] = True
    return History(
        item_ids=item_ids,
        item_index=item_index,
        user_index=user_index,
        sequences=sequences,
        matrix=matrix,
        times=time_arr,
        events_item=item_arr,
        recommendable=recommendable,
        attributes=attributes,
        newest=float(time_arr.max()) if len(time_arr) else 0.0,
    )


def _seconds(moment: datetime) -> float:
    return as_utc(moment).timestamp()


def recent_weights(
    sequence: np.ndarray, recent: int, decay: float
) -> tuple[np.ndarray, FloatArray]:
    """The user's last ``recent`` distinct items, newest first, weighted ``decay ** age``."""
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np

    seen: dict[int, None] = {}
    for index in sequence[::-1]:
        seen.setdefault(int(index), None)
        if len(seen) >= recent:
            break
    chosen = np.fromiter(seen, dtype=np.int64, count=len(seen))
    return chosen, decay ** np.arange(len(chosen), dtype=np.float64)


def weighted_rows(matrix: sp.csr_matrix, rows: np.ndarray, weights: FloatArray) -> FloatArray:
    """``weights @ matrix[rows]`` as a dense vector, straight from the CSR arrays.

    scipy's fancy indexing costs more than the arithmetic for a handful of rows, and this
    runs once per recipient on the hot path.
    """
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np

    scores = np.zeros(matrix.shape[1])
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    for row, weight in zip(rows.tolist(), weights.tolist(), strict=True):
        start, end = indptr[row], indptr[row + 1]
        scores[indices[start:end]] += weight * data[start:end]  # unique columns within a row
    return scores


def top_rows(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep each row's ``keep`` largest entries (bounded memory for a large catalogue)."""
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np
    import scipy.sparse as sp

    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        values = matrix.data[start:end]
        columns = matrix.indices[start:end]
        if len(values) > keep:
            best = np.argpartition(-values, keep)[:keep]
            values, columns = values[best], columns[best]
        rows.append(np.full(len(values), row, dtype=np.int64))
        cols.append(columns)
        data.append(values)
    if not rows:
        return sp.csr_matrix(matrix.shape)
    return sp.csr_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape
    )


@dataclass
class Fallback:
    """The order that fills a list once the scored items run out (popularity, then id)."""

    order: np.ndarray  # recommendable item indices, best first
    position: np.ndarray  # per item index: its place in ``order`` (n_items when absent)

    @classmethod
    def by_counts(cls, history: History, counts: FloatArray) -> Fallback:
        """Recommendable items by descending ``counts``, ties by item id."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        ids = history.item_ids
        candidates = np.flatnonzero(history.recommendable)
        order = np.asarray(
            sorted(candidates.tolist(), key=lambda i: (-counts[i], ids[i])), dtype=np.int64
        )
        position = np.full(history.n_items, history.n_items, dtype=np.int64)
        position[order] = np.arange(len(order))
        return cls(order, position)


def rank(scores: FloatArray, k: int, blocked: np.ndarray, fallback: Fallback) -> list[int]:
    """The ``k`` best unblocked items: positive scores first, then the fallback order.

    The fallback orders every recommendable item, so the answer is only short when fewer
    than ``k`` unblocked items exist at all.
    """
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np

    if k <= 0:
        return []
    candidates = np.flatnonzero((scores > 0) & ~blocked)
    if len(candidates) > k:
        candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    # Ties fall to the fallback order, so answers are deterministic.
    place = fallback.position
    chosen = sorted(candidates.tolist(), key=lambda i: (-scores[i], place[i]))
    if len(chosen) < k:
        taken = blocked.copy()
        taken[chosen] = True
        rest = fallback.order[~taken[fallback.order]]
        chosen.extend(rest[: k - len(chosen)].tolist())
    return chosen


def blocked_mask(history: History, exclude: Iterable[str], also: Sequence[int] = ()) -> np.ndarray:
    """Items that may not be recommended: outside the catalogue, excluded, or ``also``."""
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np

    blocked = ~history.recommendable
    excluded = history.indices(exclude)
    if len(excluded):
        blocked[excluded] = True
    if len(also):
        blocked[np.asarray(also, dtype=np.int64)] = True
    return blocked
