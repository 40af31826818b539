"""An example tailormail plugin: the ``thompson`` policy and the ``newest`` recipe.

tailormail loads this module through the ``tailormail`` entry point group
(``example = "tailormail_example_plugin"``), so the hook implementations live here.
"""

from __future__ import annotations

from collections.abc import Callable

from engine import hookimpl
from engine.hookspecs import PolicyFactory, RecipeFactory
from tailormail_example_plugin.newest import NewestRecipe
from tailormail_example_plugin.thompson import ThompsonPolicy

__all__ = ["NewestRecipe", "ThompsonPolicy", "register_policies", "register_recipes"]
__version__ = "0.1.0"


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``thompson`` policy."""
    register("thompson", ThompsonPolicy)


@hookimpl
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register the ``newest`` recipe."""
    register("newest", NewestRecipe)
