"""``tailormail secret status`` and ``tailormail secret rotate``: the project secret, shown
without its value, and replaced only on purpose (see ``engine.secret_rotation``)."""

from __future__ import annotations

import stat
from typing import Annotated

import typer
from rich.text import Text

from engine.cli.support import ProjectOption, console, resolve_project
from engine.project_secret import database_needs_secret, missing_secret_message
from engine.secret import MissingSecretError, read_secret_lines, secret_file_exists
from engine.secret_rotation import rotate_secret
from engine.settings import load_settings

secret_app = typer.Typer(help="The project secret: where it is, and replacing it on purpose.")


@secret_app.command()
def status(project: ProjectOption = None) -> None:
    """Where the secret comes from and how many previous secrets are still accepted; a
    missing secret the database needs is an error (nothing is created)."""

    settings = load_settings(resolve_project(project))
    if settings.secret is not None:
        previous = len(settings.secret_previous)
        console.print(Text(f"secret: from TAILORMAIL_SECRET; {previous} previous accepted"))
        return
    path = settings.path(settings.secret_file)
    if not secret_file_exists(path):
        if database_needs_secret(settings.resolved_database_url):
            raise MissingSecretError(missing_secret_message(path))
        console.print(Text(f"secret: {path} does not exist yet; created on first use"))
        return
    lines = read_secret_lines(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    console.print(
        Text(f"secret: {path} (mode {mode:04o}); {len(lines) - 1} previous accepted"),
        soft_wrap=True,
    )


@secret_app.command()
def rotate(
    keep_previous: Annotated[
        int,
        typer.Option(help="Previous secrets to keep accepting (the one replaced first)."),
    ] = 1,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Write a new secret; links already sent keep working while a previous secret is
    kept (lost secret: they answer 404). Forgotten people stay forgotten."""

    settings = load_settings(resolve_project(project))
    if not yes:
        typer.confirm("Replace the project secret?", abort=True)
    done = rotate_secret(settings, keep_previous)
    if done.lost:
        links = f"links in the {done.sent} emails already sent answer 404 from now on"
    elif done.kept:
        links = (
            f"links already sent ({done.sent} emails) keep working while the previous secret "
            f"stays on line 3 of {done.path}; delete that line to make them answer 404"
        )
    else:
        links = f"links in the {done.sent} emails already sent answer 404 from now on"
    if done.dropped:
        links += f"; {done.dropped} older secret(s) dropped: their links answer 404"
    console.print(
        Text(f"New secret written to {done.path}: {links}. Forgotten addresses stay forgotten."),
        soft_wrap=True,
    )
    if done.unmatched_forgotten:
        console.print(
            Text(
                f"{done.unmatched_forgotten} forgotten address(es) were hashed with the lost "
                "secret by an earlier release and can no longer be matched; forget them "
                "again if they come back"
            ),
            soft_wrap=True,
        )
    console.print(Text("Restart `tailormail serve` and the workers so they read it."))
