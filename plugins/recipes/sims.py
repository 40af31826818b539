"""The ``sims`` recipe: item-to-item similarity from co-occurrence, like Amazon Personalize's
SIMS. Two items are alike when the same users interact with both."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from engine import hookimpl
from engine.hookspecs import RecipeFactory
from plugins.recipes.base import ScoredRecipe, check_positive, check_share
from plugins.recipes.history import History, recent_weights, top_rows, weighted_rows

if TYPE_CHECKING:
    import scipy.sparse as sp

    from plugins.recipes.history import FloatArray


def cooccurrence_similarity(history: History, alpha: float, neighbours: int) -> sp.csr_matrix:
    """Items x items: co-occurrence over ``norm_i ** alpha * norm_j ** (1 - alpha)``.

    ``alpha = 0.5`` is cosine; a larger ``alpha`` favours popular neighbours less. Each row
    keeps its ``neighbours`` best entries, so memory stays linear in the catalogue.
    """
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np
    import scipy.sparse as sp

    matrix = history.matrix.tocsc()
    co = (matrix.T @ matrix).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    norms = np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        left = np.where(norms > 0, norms**-alpha, 0.0)
        right = np.where(norms > 0, norms ** -(1.0 - alpha), 0.0)
    scaled = sp.diags(left) @ co @ sp.diags(right)
    return top_rows(scaled.tocsr(), neighbours)


def recency_scores(
    history: History, matrix: sp.csr_matrix, user_id: str, recent: int, decay: float
) -> FloatArray:
    """``matrix`` rows of the user's last ``recent`` items, the newest weighing most."""
    chosen, weights = recent_weights(history.sequence(user_id), recent, decay)
    return weighted_rows(matrix, chosen, weights)


class SimsRecipe(ScoredRecipe):
    """Item-to-item neighbours; ``recommend`` sums the neighbours of the user's recent items.

    ``recent`` items count, the newest weighing 1, the one before ``decay``, then
    ``decay ** 2``... ``alpha`` tunes the normalization (0.5: cosine), ``neighbours`` how many
    similar items each item keeps, ``kind_weights`` how much each interaction kind counts.
    """

    name = "sims"

    def __init__(
        self,
        recent: int = 5,
        decay: float = 0.7,
        alpha: float = 0.5,
        neighbours: int = 200,
        kind_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(kind_weights)
        check_positive("recent", recent, whole=True)
        check_positive("neighbours", neighbours, whole=True)
        check_positive("decay", decay)
        check_share("alpha", alpha)
        if decay > 1:
            raise ValueError(f"decay must be at most 1, got {decay!r}")
        self.recent, self.decay = int(recent), float(decay)
        self.alpha, self.neighbours = float(alpha), int(neighbours)
        self._similarity: sp.csr_matrix | None = None

    def fit_model(self, history: History) -> None:
        """Fit the item-item co-occurrence similarity on ``history``."""
        self._similarity = cooccurrence_similarity(history, self.alpha, self.neighbours)

    def user_scores(self, user_id: str) -> FloatArray:
        """Similarity to the user's recent items, recency-weighted."""
        assert self._similarity is not None
        return recency_scores(self.history, self._similarity, user_id, self.recent, self.decay)

    def item_scores(self, index: int) -> FloatArray:
        """Similarity to the item at ``index``."""
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        assert self._similarity is not None
        return weighted_rows(self._similarity, np.asarray([index]), np.ones(1))


@hookimpl
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register the ``sims`` recipe."""
    register("sims", SimsRecipe)
