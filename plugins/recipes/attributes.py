"""Item and user attributes as features: what lets ``personalize`` use metadata (HRNN-Metadata's
job) and give new items exposure by what they are like (HRNN-Coldstart's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from plugins.recipes.history import weighted_rows

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from plugins.recipes.history import FloatArray

# An attribute with (nearly) one value per row is an identifier (a title, a URL), not a trait.
_MAX_DISTINCT_SHARE = 0.5


def _values(value: Any) -> list[str]:
    """The categorical values of one attribute value (a list counts each element)."""
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value if isinstance(v, str | bool | int) and v != ""]
    if isinstance(value, int):
        return [str(value)]
    return []  # floats (prices) and nested values are not categories


def categorical_names(rows: Sequence[Mapping[str, Any]], wanted: Iterable[str] | None) -> list[str]:
    """The attribute names to use: ``wanted``, or every categorical one that is no identifier."""
    if wanted is not None:
        return list(wanted)
    present = [row for row in rows if row]
    names = sorted({name for row in present for name in row})
    chosen = []
    for name in names:
        distinct: set[str] = set()
        having = 0
        for row in present:
            values = _values(row.get(name))
            if values:
                having += 1
                distinct.update(values)
        if having and len(distinct) <= max(2, _MAX_DISTINCT_SHARE * having):
            chosen.append(name)
    return chosen


def feature_matrix(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> sp.csr_matrix:
    """Rows x (name, value) features, one-hot, each row scaled to unit length."""
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np
    import scipy.sparse as sp

    vocabulary: dict[tuple[str, str], int] = {}
    row_ids: list[int] = []
    col_ids: list[int] = []
    for row_number, row in enumerate(rows):
        for name in names:
            for value in _values(row.get(name)):
                col_ids.append(vocabulary.setdefault((name, value), len(vocabulary)))
                row_ids.append(row_number)
    data = np.ones(len(row_ids))
    features = sp.csr_matrix((data, (row_ids, col_ids)), shape=(len(rows), len(vocabulary)))
    features.sum_duplicates()
    features.data[:] = 1.0
    lengths = np.sqrt(np.asarray(features.multiply(features).sum(axis=1)).ravel())
    scale = np.where(lengths > 0, 1.0 / np.maximum(lengths, 1e-12), 0.0)
    return (sp.diags(scale) @ features).tocsr()


def affinity(features: sp.csr_matrix, indices: np.ndarray, weights: FloatArray) -> FloatArray:
    """How much each row's features resemble the weighted profile of rows ``indices``."""
    # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
    import numpy as np

    if not len(indices) or features.shape[1] == 0:
        return np.zeros(features.shape[0])
    profile = weighted_rows(features, indices, weights)
    return np.asarray(features @ profile).ravel()


def segment_keys(attributes: Mapping[str, Any], names: Sequence[str]) -> list[tuple[str, str]]:
    """A recipient's ``(attribute, value)`` pairs among ``names``: the segments they are in."""
    return [(name, value) for name in names for value in _values(attributes.get(name))]
