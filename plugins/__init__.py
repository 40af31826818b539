"""Every built-in plugin, each loaded by dotted name (``engine.plugins.DEFAULT_PLUGINS``).

Policies, recipes, delivery backends, webhook handlers, executors, features, eligibility
and the Celery workers. A plugin may import any layer of the engine; the engine never
imports a plugin (docs/architecture.md).
"""
