"""The ``tailormail`` command line: one module per command group, tables and charts.

``commands`` holds the Typer app, ``main`` and the core commands; ``builtin`` registers
every built-in command by path through ``register_commands``, as a plugin does, and
``command_group`` imports a command's module only when it runs; ``support`` what every
command shares (the console pair, finding the project, opening its Engine);
``sending``, ``learning``, ``privacy``, ``schedule``, ``secret`` the command groups;
``report_tables`` and ``runs_table`` what ``report`` and ``runs`` print; ``listening``
and ``resources`` the ``serve`` port and running out of disk. The top layer: nothing in
the engine imports it.
"""

from __future__ import annotations

from typing import Any

from engine.moved import forward


def __getattr__(name: str) -> Any:
    # ``engine.cli`` was a module until issue 19 (``engine.cli:main`` in old installs)
    return forward(__name__, "engine.cli", "engine.cli.commands", name)
