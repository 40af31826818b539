"""Variants as the ledger keeps them: the action set offered with each decision.

A decision row stores the offered variants (key, subject, template, features) so learning
and off-policy evaluation use the action set as it was, even after the campaign file has
added, removed or changed variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.types import Variant


def offered_variants(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    """The JSON form of ``variants`` stored on a ledger row, in the order offered."""
    return [
        {"key": v.key, "subject": v.subject, "template": v.template, "features": dict(v.features)}
        for v in variants
    ]


def variants_from_offered(
    offered: Sequence[dict[str, Any]] | None, fallback: Sequence[Variant]
) -> list[Variant]:
    """The ``Variant`` values a row was decided over; rows logged before the ledger kept
    them (``offered`` is None) fall back to ``fallback``, today's variants."""
    if not offered:
        return list(fallback)
    return [
        Variant(
            key=str(entry["key"]),
            subject=str(entry.get("subject", "")),
            template=str(entry.get("template", "")),
            features=dict(entry.get("features") or {}),
        )
        for entry in offered
    ]
