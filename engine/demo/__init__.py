"""``tailormail demo``: simulated people read real emails from a scratch project.

``tour`` runs the demo (a bandit against two A/B tests), ``content`` the item loop of a
recipe fed by email clicks, ``simulation`` the simulated population and its readers. Sits
above ``web`` and ``sending`` (it serves and sends like a real project); only the CLI
imports it.
"""

from __future__ import annotations

from typing import Any

from engine.moved import forward


def __getattr__(name: str) -> Any:
    # ``engine.demo`` was a module until issue 19: its names still read, with a warning
    return forward(__name__, "engine.demo", "engine.demo.tour", name)
