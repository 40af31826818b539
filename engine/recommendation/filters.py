"""Campaign filters: which items an email may show, applied before the top-k cut.

A campaign's ``[filters]`` table excludes the items a recipient already interacted with
(every kind, or the kinds listed) and items failing business rules on their attributes:
category in / not in, a price range, availability, released within a period. Plugins add
their own through the ``filter_items`` hook.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from engine.durations import duration_field
from engine.models import as_utc

_PRICE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_TRUE = {"true", "yes", "1", "y", "available", "in stock", "in_stock"}
_FALSE = {"false", "no", "0", "n", "unavailable", "out of stock", "out_of_stock", "sold out"}


class FilterConfig(BaseModel):
    """The ``[filters]`` table of a campaign.

    ``exclude_interacted``: ``true`` drops every item the recipient interacted with, a list
    of kinds (``["purchase"]``) only those kinds', ``false`` none. Attribute rules name the
    attribute they read (``category_attribute`` and so on); an item missing a price or a
    date fails a price or date rule, an item missing the availability attribute counts as
    available.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    exclude_interacted: bool | list[str] = True
    category_attribute: str = "category"
    category_in: list[str] | None = None
    category_not_in: list[str] = Field(default_factory=list)
    price_attribute: str = "price"
    price_min: float | None = None
    price_max: float | None = None
    availability_attribute: str = "available"
    available_only: bool = False
    date_attribute: str = "published"
    newer_than: timedelta | None = None

    @field_validator("newer_than", mode="before")
    @classmethod
    def _period(cls, value: Any) -> Any:
        return duration_field(value)

    @field_validator("price_max")
    @classmethod
    def _range(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("price_min")
        if value is not None and low is not None and value < low:
            raise ValueError(f"price_max {value} is below price_min {low}")
        return value

    def interacted_kinds(self) -> list[str] | None:
        """The kinds whose items are excluded; None means every kind, [] none."""
        if self.exclude_interacted is True:
            return None
        if self.exclude_interacted is False:
            return []
        return list(self.exclude_interacted)

    def has_item_rules(self) -> bool:
        """True when any attribute rule is set."""
        return bool(
            self.category_in is not None
            or self.category_not_in
            or self.price_min is not None
            or self.price_max is not None
            or self.available_only
            or self.newer_than is not None
        )


def _categories(value: Any) -> set[str]:
    if isinstance(value, list | tuple | set | frozenset):
        return {str(v) for v in value}
    return {str(value)} if value is not None and value != "" else set()


def _number(value: Any) -> float | None:
    """A number, or the first number in a text such as ``"77.00 EUR"`` or ``"€8"``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _PRICE.search(str(value))
    return float(match.group().replace(",", "")) if match else None


def _available(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return value is not False
    if isinstance(value, int | float):
        return value > 0  # a stock count
    text = str(value).strip().lower()
    return text not in _FALSE and (text in _TRUE or text != "")


def _moment(value: Any) -> datetime | None:
    """A date-time from a datetime, an ISO 8601 text or a unix time in seconds."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    try:
        return as_utc(datetime.fromisoformat(str(value).strip()))
    except ValueError:
        return None


def passes_rules(config: FilterConfig, attributes: Mapping[str, Any], now: datetime) -> bool:
    """True when an item with ``attributes`` passes every attribute rule of ``config``."""
    if config.category_in is not None or config.category_not_in:
        categories = _categories(attributes.get(config.category_attribute))
        if config.category_in is not None and not categories & set(config.category_in):
            return False
        if categories & set(config.category_not_in):
            return False
    if config.price_min is not None or config.price_max is not None:
        price = _number(attributes.get(config.price_attribute))
        if price is None:
            return False
        if config.price_min is not None and price < config.price_min:
            return False
        if config.price_max is not None and price > config.price_max:
            return False
    if config.available_only and not _available(attributes.get(config.availability_attribute)):
        return False
    if config.newer_than is not None:
        moment = _moment(attributes.get(config.date_attribute))
        if moment is None or moment < as_utc(now) - config.newer_than:
            return False
    return True


def excluded_by_rules(
    config: FilterConfig, items: Iterable[tuple[str, Mapping[str, Any]]], now: datetime
) -> set[str]:
    """The ids of the catalogue items that fail the attribute rules (checked once per run)."""
    if not config.has_item_rules():
        return set()
    return {item_id for item_id, attributes in items if not passes_rules(config, attributes, now)}
