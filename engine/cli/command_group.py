"""The ``tailormail`` group: its commands come from ``register_commands`` on first use.

Built-in and plugin commands register the same way (``engine.cli.builtin`` is a plugin
like the others). Listing them is cheap, as a command may be registered by dotted path;
only the command being run is imported and turned into a Click command (``--help``
imports them all, to show their help).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pluggy
import typer
from typer._click import Command, Context  # Typer's vendored Click (see support.py)
from typer.core import TyperGroup
from typer.models import CommandInfo

from engine import hookspecs
from engine.cli import builtin
from engine.errors import TailormailError, TailormailWarning
from engine.hookspecs import CommandTarget
from engine.plugins import make_plugin_manager


def builtin_commands() -> dict[str, CommandTarget]:
    """The built-in commands' names and targets, without loading any plugin."""
    found: dict[str, CommandTarget] = {}
    builtin.register_commands(register=found.__setitem__)
    return found


def collect_commands() -> dict[str, CommandTarget]:
    """Every command's name and target: the built-ins, then the installed plugins'.

    A plugin cannot replace a built-in command (``send`` is always tailormail's ``send``,
    and a built-in command starts without loading the plugins): its command of the same
    name is left out with a warning. When the installed plugins cannot load, the built-ins
    alone: the command run then reports the broken plugin (as every command that opens a
    project does).
    """
    builtins = builtin_commands()
    found: dict[str, CommandTarget] = {}

    def register(name: str, target: CommandTarget) -> None:
        if name in builtins and target != builtins[name]:
            warnings.warn(
                f"a plugin registers the command {name!r}, which is built in: a plugin "
                "cannot replace a built-in command; give it another name",
                TailormailWarning,
                stacklevel=2,
            )
            return
        found[name] = target

    try:
        pm = make_plugin_manager([builtin])
    except TailormailError:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        pm.register(builtin)
    pm.hook.register_commands(register=register)
    return found


def load_target(target: CommandTarget) -> Any:
    """``target`` itself, or the attribute its ``"module:attribute"`` path names."""
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def make_command(name: str, target: CommandTarget, *, rich_markup_mode: Any) -> Command:
    """The Click command ``name`` for a registered ``target`` (imported now if a path)."""
    loaded = load_target(target)
    if isinstance(loaded, Command):
        return loaded
    if isinstance(loaded, typer.Typer):
        group = typer.main.get_group(loaded)
        group.name = name
        return group
    return typer.main.get_command_from_info(
        CommandInfo(name=name, callback=loaded),
        pretty_exceptions_short=True,
        rich_markup_mode=rich_markup_mode,
    )


class CommandGroup(TyperGroup):
    """A Typer group that learns its commands from ``register_commands`` when first asked,
    and imports a command's module when that command is looked up."""

    def __init__(self, **attrs: Any) -> None:
        """As ``TyperGroup``; the registered commands are collected on first use."""
        super().__init__(**attrs)
        self._registered: dict[str, CommandTarget] | None = None

    def _targets(self) -> dict[str, CommandTarget]:
        if self._registered is None:
            self._registered = collect_commands()
        return self._registered

    def list_commands(self, ctx: Context) -> list[str]:
        """The registered commands in registration order, then any added directly."""
        names = list(self._targets())
        return names + [name for name in self.commands if name not in names]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        """Command ``cmd_name``, its module imported on this first use."""
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        # A built-in command needs no plugin loaded to be found (plugins cannot replace it).
        target = builtin_commands().get(cmd_name) or self._targets().get(cmd_name)
        if target is None:
            return None
        command = make_command(cmd_name, target, rich_markup_mode=self.rich_markup_mode)
        self.commands[cmd_name] = command
        return command
