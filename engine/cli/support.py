"""What every ``tailormail`` command shares: the console pair, finding the project,
opening its Engine, and printing ``error:`` and ``warning:`` lines.

Built-in commands and plugin commands (``register_commands``) print and open the project
the same way, so they all accept ``--project`` before or after the subcommand (the one
given before travels on the Click context), honour ``TAILORMAIL_PROJECT``, and refuse,
creating nothing, to run outside a project.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

# Typer vendors Click as ``typer._click``: a command runs in its contexts, not click's.
from typer._click.globals import get_current_context

from engine.errors import TailormailError

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.store import Store

PROJECT_ENV = "TAILORMAIL_PROJECT"
PROJECT_KEY = "tailormail.project"
"""Where ``tailormail --project DIR <command>`` leaves DIR: the Click context's ``meta``."""

console = Console()
"""Standard output, for every command's tables and lines (built-in and plugin ones)."""
err = Console(stderr=True)
"""Standard error, for every command's ``error:`` and ``warning:`` lines."""


def print_warning(message: str) -> None:
    """``warning: message`` on stderr, printed as is."""
    err.print(Text.assemble(("warning: ", "yellow"), message), highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: message`` on stderr, the message printed as is (no markup interpretation)."""
    err.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)


ProjectOption = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-p",
        help=f"Project directory (default: {PROJECT_ENV}, else found from the cwd upwards).",
    ),
]
"""The ``--project/-p DIR`` option; give it to a command and pass it to ``open_engine``."""


class NotInProjectError(TailormailError):
    """The command needs a tailormail project and none was found."""


def remember_project(ctx: typer.Context, project: Path | None) -> None:
    """Keep the ``--project`` given before the subcommand on ``ctx`` (the CLI's callback
    does this); the subcommand's context shares its ``meta``."""
    ctx.meta[PROJECT_KEY] = project


def _project_before_subcommand() -> Path | None:
    ctx = get_current_context(silent=True)
    found: Path | None = None if ctx is None else ctx.meta.get(PROJECT_KEY)
    return found


def _check(directory: Path, source: str) -> Path:
    from engine.settings import CONFIG_FILE  # lazy: as in resolve_project

    if not directory.is_dir():
        raise NotInProjectError(f"{source} {directory}: no such directory")
    if not (directory / CONFIG_FILE).is_file():
        raise NotInProjectError(
            f"{source} {directory} is not a tailormail project (no {CONFIG_FILE} there); "
            f"create one with `tailormail init {directory}`"
        )
    return directory.resolve()


def resolve_project(project: Path | None = None) -> Path:
    """The project directory a command works on, or ``NotInProjectError``.

    In order: ``project`` (the command's own ``--project``), the ``--project`` given before
    the subcommand, ``TAILORMAIL_PROJECT``, then the nearest directory at or above the
    current one holding ``config/tailormail.toml``.
    """
    if project is not None:
        return _check(project, "--project")
    if (given := _project_before_subcommand()) is not None:
        return _check(given, "--project")
    if os.environ.get(PROJECT_ENV):
        return _check(Path(os.environ[PROJECT_ENV]), PROJECT_ENV)
    # lazy: engine.settings builds its pydantic models at import (~100 ms), and
    # `tailormail --version`/`--help` need none of it
    from engine.settings import CONFIG_FILE, find_project_dir

    found = find_project_dir()
    if found is None:
        here = Path.cwd()
        raise NotInProjectError(
            f"not in a tailormail project: no {CONFIG_FILE} in {here} or any parent "
            "directory; create one with `tailormail init DIR`, or pass --project DIR "
            f"(or set {PROJECT_ENV})"
        )
    return found


def open_engine(project: Path | None = None, **overrides: Any) -> Engine:
    """The Engine of the project a command works on (see ``resolve_project``).

    Outside a project this raises ``NotInProjectError`` before anything is created (no
    database, no secret file). Use it as a context manager so connections are released::

        with open_engine(project) as engine:
            ...
    """
    from engine.app import Engine  # lazy: the Engine imports most of tailormail

    return Engine(project_dir=resolve_project(project), overrides=overrides or None)


def open_store(project: Path | None = None) -> Store:
    """The settings and database of the project a command reads (see
    ``resolve_project``), without plugins or templates (``engine.store``). Outside a
    project this raises ``NotInProjectError`` before anything is created."""
    from engine.store import Store  # lazy: the database layer, loaded when a command runs

    return Store(project_dir=resolve_project(project))
