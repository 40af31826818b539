"""tailormail: personalized scheduled email alerts chosen by a contextual bandit.

The public surface for plugin authors and notebooks lives here. docs/architecture.md maps
the folders below (one per stage of the loop) and which way they import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import moved as _moved
from engine.hookspecs import hookimpl, hookspec
from engine.types import (
    Context,
    Decision,
    DeliveryBackend,
    EventType,
    Feedback,
    Interaction,
    Item,
    Message,
    Policy,
    Recipe,
    Recipient,
    SendResult,
    SendStatus,
    TrackingEvent,
    Variant,
)

__version__ = "0.1.0"

# old module paths (before the engine was laid out by stage) import with a warning
_moved.install()

__all__ = [
    "Context",
    "Decision",
    "DeliveryBackend",
    "EventType",
    "Feedback",
    "Interaction",
    "Item",
    "Message",
    "Policy",
    "Recipe",
    "Recipient",
    "SendResult",
    "SendStatus",
    "TrackingEvent",
    "Variant",
    "__version__",
    "hookimpl",
    "hookspec",
    "policy",
    "recipe",
]


def policy(name: str, **params: Any) -> Policy:
    """A policy from the default plugin manager (built-ins plus installed entry points)."""
    # lazy: the plugin manager only when a notebook asks for a policy or a recipe
    from engine.plugins import make_plugin_manager
    from engine.registry import collect

    pm = make_plugin_manager()
    factory: Callable[..., Policy] = collect("policy", pm.hook.register_policies).get(name)
    result: Policy = factory(**params)
    return result


def recipe(name: str, **params: Any) -> Recipe:
    """A recipe from the default plugin manager (built-ins plus installed entry points)."""
    # lazy: the plugin manager only when a notebook asks for a policy or a recipe
    from engine.plugins import make_plugin_manager
    from engine.registry import collect

    pm = make_plugin_manager()
    factory: Callable[..., Recipe] = collect("recipe", pm.hook.register_recipes).get(name)
    result: Recipe = factory(**params)
    return result
