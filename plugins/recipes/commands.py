"""``tailormail recommend``, ``similar`` and ``evaluate-recipe``, registered by path.

The commands live in ``plugins.recipes.cli``, imported only when one of them runs, so
this plugin module stays light for web processes and workers that load every plugin.
"""

from __future__ import annotations

from engine import hookimpl
from engine.hookspecs import CommandRegister


@hookimpl
def register_commands(register: CommandRegister) -> None:
    """Register ``recommend``, ``similar`` and ``evaluate-recipe``."""
    register("recommend", "plugins.recipes.cli:recommend")
    register("similar", "plugins.recipes.cli:similar")
    register("evaluate-recipe", "plugins.recipes.cli:evaluate_recipe")
