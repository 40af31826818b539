"""The built-in reward function: the campaign's weights per event type (a fallback)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import TrackingEvent, hookimpl

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign


@hookimpl(trylast=True)
def reward(engine: Engine, campaign: Campaign, events: list[TrackingEvent]) -> float | None:
    """Sum the weights of the distinct human event types; the default when there are none.

    Scanner clicks and machine opens were flagged when they arrived and count for nothing,
    and a second click on the same email is worth no more than the first.
    """
    weights = campaign.reward
    seen = {e.type.value for e in events if not e.bot and not e.machine}
    scored = [getattr(weights, kind) for kind in sorted(seen) if hasattr(weights, kind)]
    return float(sum(scored)) if scored else float(weights.default)
