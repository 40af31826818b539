"""The plugin manager: built-ins by dotted name, then entry points, then plugins passed in."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import pluggy

from engine import hookspecs
from engine.errors import ConfigError, PluginError

DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.features",
    "plugins.features_history",
    "plugins.frequency_caps",
    "plugins.deliverability",
    "plugins.rewards",
    "plugins.executors",
    "plugins.celery_workers",
    "plugins.policies.uniform",
    "plugins.policies.vw",
    "plugins.policies.thompson",
    "plugins.policies.abtest",
    "plugins.policies.fixed",
    "plugins.recipes.popularity",
    "plugins.recipes.sims",
    "plugins.recipes.personalize",
    "plugins.recipes.ranking",
    "plugins.recipes.commands",
    "plugins.delivery.outbox",
    "plugins.delivery.outbox_command",
    "plugins.delivery.smtp",
    "plugins.delivery.memory",
    "plugins.delivery.null",
    "plugins.delivery.ses",
    "plugins.delivery.sendgrid",
    "plugins.delivery.postmark",
    "plugins.delivery.mailgun",
    "plugins.delivery.http_json",
    "plugins.webhooks.sendgrid",
    "plugins.webhooks.mailgun",
    "plugins.webhooks.postmark",
    "plugins.webhooks.ses",
    "plugins.webhooks.standard",
)


CORE_CHECKS: dict[str, str] = {
    "plugins.eligibility": "suppressions, unsubscribes, bounces and complaints",
    "plugins.forgotten": "forgotten addresses",
}
"""Modules that once held compliance checks, now done by the core
(``engine.audience.compliance``)."""


def check_disabled(disabled_plugins: Iterable[str]) -> None:
    """Refuse a ``disabled_plugins`` list that names a module whose checks are compliance."""
    for name in disabled_plugins:
        if name in CORE_CHECKS:
            raise ConfigError(
                f"disabled_plugins: {name!r} cannot be disabled: {CORE_CHECKS[name]} are "
                "checked by the core on every send and no setting turns that off; remove "
                "it from disabled_plugins (to replace the frequency caps, disable "
                "'plugins.frequency_caps' instead)"
            )


def make_plugin_manager(
    extra_plugins: Sequence[Any] = (),
    disabled_plugins: Iterable[str] = (),
    *,
    load_entry_points: bool = True,
) -> pluggy.PluginManager:
    """A fresh manager: no module-global state, so two engines never share plugins.

    ``disabled_plugins`` names built-in modules or entry-point names that must not load
    (never one that held compliance checks: ``ConfigError``, see ``check_disabled``).
    ``check_pending()`` at the end makes a misspelled hook implementation fail loudly.
    """
    disabled = set(disabled_plugins)
    check_disabled(sorted(disabled))
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disabled:
        pm.set_blocked(name)
    for dotted in DEFAULT_PLUGINS:
        if dotted in disabled:
            continue
        pm.register(importlib.import_module(dotted), name=dotted)
    if load_entry_points:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    for plugin in extra_plugins:
        plugin_name: str | None = getattr(plugin, "__name__", None)
        if plugin_name in disabled:
            continue
        pm.register(plugin, name=plugin_name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Every loaded plugin with the hooks it implements (for ``tailormail plugins``)."""
    rows: list[dict[str, Any]] = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda pair: pair[0]):
        if plugin is None:  # blocked
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        dist = next((d for p, d in pm.list_plugin_distinfo() if p is plugin), None)
        rows.append(
            {
                "name": name,
                "hooks": hooks,
                "version": getattr(dist, "version", None) if dist else None,
                "distribution": getattr(dist, "project_name", None) if dist else None,
            }
        )
    return rows
