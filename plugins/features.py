"""Default context features: the recipient's scalar attributes and e-mail domain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import Recipient, hookimpl

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

_SCALARS = (str, int, float, bool)


@hookimpl(trylast=True)  # a fallback: any plugin answering the same key wins
def recipient_features(
    engine: Engine, campaign: Campaign, recipient: Recipient
) -> dict[str, Any] | None:
    """Every scalar attribute becomes a feature; ``email_domain`` is added as a category."""
    features: dict[str, Any] = {
        key: value
        for key, value in recipient.attributes.items()
        if isinstance(value, _SCALARS) and value != ""
    }
    domain = recipient.email.rpartition("@")[2].lower()
    if domain:
        features["email_domain"] = domain
    return features
