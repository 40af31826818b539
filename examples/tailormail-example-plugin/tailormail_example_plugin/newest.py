"""The ``newest`` recipe: the catalogue's newest items, the ones a user's favourite
categories hold first.

A small recipe written only against tailormail's public types, to show what a recipe
plugin needs: ``fit(interactions, items)`` once per data change (the engine stores the
fitted object, so it must pickle), ``recommend(user_id, k, exclude)`` per recipient, and
``similar(item_id, k)`` where it makes sense.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from engine import Interaction, Item


class NewestRecipe:
    """Newest items first, by the ``date_attribute`` of the catalogue (ISO dates sort as
    text); an item without one counts from its first interaction.

    With ``favour_categories`` (the default) a user's list starts with the newest items of
    the categories (``category_attribute``) they interacted with most, then the newest of
    the rest, so every list is full while the catalogue has items left.
    """

    name = "newest"

    def __init__(
        self,
        date_attribute: str = "published",
        category_attribute: str = "category",
        favour_categories: bool = True,
    ) -> None:
        for label, value in (
            ("date_attribute", date_attribute),
            ("category_attribute", category_attribute),
        ):
            if not isinstance(value, str) or not value:
                raise ValueError(f"newest recipe: {label} must be a non-empty string")
        if not isinstance(favour_categories, bool):
            raise ValueError("newest recipe: favour_categories must be true or false")
        self.date_attribute = date_attribute
        self.category_attribute = category_attribute
        self.favour_categories = favour_categories
        self.ranking: list[str] = []
        self.category: dict[str, str] = {}
        self.tastes: dict[str, Counter[str]] = {}

    def fit(self, interactions: Iterable[Interaction], items: Iterable[Item] = ()) -> None:
        """Order the catalogue by date and count each user's categories."""
        catalogue = {item.item_id: item.attributes for item in items}
        first_seen: dict[str, str] = {}
        events = list(interactions)
        for event in events:
            stamp = event.timestamp.isoformat()
            first_seen[event.item_id] = min(stamp, first_seen.get(event.item_id, stamp))
        known = catalogue or dict.fromkeys(first_seen, {})

        def date(item_id: str) -> str:
            value = known[item_id].get(self.date_attribute)
            return str(value) if value is not None else first_seen.get(item_id, "")

        self.ranking = sorted(known, key=lambda i: (date(i), i), reverse=True)
        self.category = {
            i: str(attrs[self.category_attribute])
            for i, attrs in known.items()
            if attrs.get(self.category_attribute) is not None
        }
        self.tastes = {}
        for event in events:
            found = self.category.get(event.item_id)
            if found is not None:
                self.tastes.setdefault(event.user_id, Counter())[found] += event.value

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The ``k`` newest items outside ``exclude``, the user's categories first."""
        skip = set(exclude)
        candidates = [i for i in self.ranking if i not in skip]
        taste = self.tastes.get(user_id) if self.favour_categories else None
        if taste:
            place = {category: n for n, (category, _) in enumerate(taste.most_common())}
            last = len(place)
            # sorted() is stable: inside one category the newest still come first.
            candidates.sort(key=lambda i: place.get(self.category.get(i, ""), last))
        return candidates[: max(k, 0)]

    def similar(self, item_id: str, k: int) -> list[str]:
        """The newest other items of ``item_id``'s category ([] for an unknown item)."""
        category = self.category.get(item_id)
        if category is None:
            return []
        same = [i for i in self.ranking if i != item_id and self.category.get(i) == category]
        return same[: max(k, 0)]
