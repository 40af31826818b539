"""Default context features: the recipient's scalar attributes and e-mail domain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine import Recipient, hookimpl

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

_SCALARS = (str, int, float, bool)


def attribute_features(recipient: Recipient) -> dict[str, Any]:
    """Every scalar, non-empty attribute as a feature, plus ``email_domain`` as a category."""
    features: dict[str, Any] = {
        key: value
        for key, value in recipient.attributes.items()
        if isinstance(value, _SCALARS) and value != ""
    }
    domain = recipient.email.rpartition("@")[2].lower()
    if domain:
        features["email_domain"] = domain
    return features


@hookimpl(trylast=True)  # a fallback: any plugin answering the same key wins
def recipient_features_batch(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, dict[str, Any]]:
    """The attribute features of every recipient of the batch (no database access)."""
    return {r.recipient_id: attribute_features(r) for r in recipients}
