"""The built-in commands, registered the way a plugin registers its own.

Each is named by ``"module:attribute"``, so listing them imports nothing; a command's
module is imported when that command runs (or ``--help`` lists them all).
"""

from __future__ import annotations

from engine.hookspecs import CommandRegister, hookimpl

BUILTIN_COMMANDS: tuple[tuple[str, str], ...] = (
    ("init", "engine.cli.commands:init"),
    ("import", "engine.cli.commands:import_"),
    ("send", "engine.cli.commands:send"),
    ("runs", "engine.cli.commands:runs"),
    ("report", "engine.cli.commands:report"),
    ("rewards", "engine.cli.commands:rewards"),
    ("export", "engine.cli.commands:export"),
    ("serve", "engine.cli.commands:serve"),
    ("api", "engine.cli.api:api"),
    ("plugins", "engine.cli.commands:plugins"),
    ("demo", "engine.cli.commands:demo"),
    ("forget", "engine.cli.privacy:forget"),
    ("retention", "engine.cli.privacy:retention"),
    ("archive", "engine.cli.archive:archive"),
    ("train", "engine.cli.learning:train"),
    ("models", "engine.cli.learning:models"),
    ("rollback", "engine.cli.learning:rollback"),
    ("evaluate", "engine.cli.learning:evaluate"),
    ("schedule", "engine.cli.schedule:schedule"),
    ("check", "engine.cli.schedule:check"),
    ("secret", "engine.cli.secret:secret_app"),
    ("keys", "engine.cli.keys:keys_app"),
    ("subscriptions", "engine.cli.subscriptions:subscriptions_app"),
    ("preview", "engine.cli.sending:preview"),
    ("resume", "engine.cli.sending:resume"),
)
"""``tailormail``'s own commands in the order ``--help`` lists them."""


@hookimpl
def register_commands(register: CommandRegister) -> None:
    """Register every built-in command by its dotted path."""
    for name, target in BUILTIN_COMMANDS:
        register(name, target)
