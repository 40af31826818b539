"""An example tailormail plugin: the ``first_match`` policy, a rule-based baseline.

tailormail loads this module through the ``tailormail`` entry point group
(``example = "tailormail_example_plugin"``), so the hook implementations live here.
"""

from __future__ import annotations

from collections.abc import Callable

from engine import hookimpl
from engine.hookspecs import PolicyFactory
from tailormail_example_plugin.rules import FirstMatchPolicy

__all__ = ["FirstMatchPolicy", "register_policies"]
__version__ = "0.1.0"


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``first_match`` policy."""
    register("first_match", FirstMatchPolicy)
