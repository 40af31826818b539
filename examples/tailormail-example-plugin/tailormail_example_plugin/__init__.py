"""An example tailormail plugin: the ``first_match`` policy and the ``newest`` recipe.

tailormail loads this module through the ``tailormail`` entry point group
(``example = "tailormail_example_plugin"``), so the hook implementations live here.
"""

from __future__ import annotations

from collections.abc import Callable

from engine import hookimpl
from engine.hookspecs import PolicyFactory, RecipeFactory
from tailormail_example_plugin.newest import NewestRecipe
from tailormail_example_plugin.rules import FirstMatchPolicy

__all__ = ["FirstMatchPolicy", "NewestRecipe", "register_policies", "register_recipes"]
__version__ = "0.1.0"


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``first_match`` policy."""
    register("first_match", FirstMatchPolicy)


@hookimpl
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register the ``newest`` recipe."""
    register("newest", NewestRecipe)
