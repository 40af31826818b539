"""``tailormail forget`` and ``tailormail retention``: erasing people's data on request and
on schedule (see ``engine.forgetting``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from engine.cli_support import ProjectOption, open_engine

console = Console()


def forget(
    recipient: Annotated[str, typer.Argument(help="The recipient's id or email address.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Erase a person's data; keep a keyed hash of their address so they are never mailed
    again, and their decisions and rewards, tied to nobody, for learning."""
    from engine.forgetting import forget as erase

    with open_engine(project) as engine:
        if not yes:
            typer.confirm(
                f"Erase everything about {recipient!r}? This cannot be undone", abort=True
            )
        summary = erase(engine, recipient)
    if summary.already:
        console.print(Text(f"{recipient} was forgotten before: nothing is left to erase."))
        return
    who = ", ".join(summary.recipient_ids) or "no recipient row"
    console.print(
        Text(
            f"Forgot {recipient} ({who}): {summary.addresses} address(es) kept only as a "
            f"keyed hash, {summary.ledger_rows} ledger rows and {summary.events} events "
            f"anonymized, {summary.interactions} interactions, {summary.suppressions} "
            f"plain-text suppressions and {summary.messages} stored messages deleted."
        ),
        soft_wrap=True,
    )


def retention(project: ProjectOption = None) -> None:
    """Anonymize ledger rows and events older than the retention setting, now (under
    'tailormail serve' an hourly job does it)."""
    from engine.errors import ConfigError
    from engine.forgetting import apply_retention

    with open_engine(project) as engine:
        summary = apply_retention(engine)
    if summary is None:
        raise ConfigError(
            'retention is not set; add for example retention = "400d" to config/tailormail.toml'
        )
    console.print(
        Text(
            f"Anonymized {summary.ledger_rows} ledger rows and {summary.events} events "
            f"from before {summary.cutoff:%Y-%m-%d %H:%M} UTC; deleted {summary.messages} "
            "stored messages."
        ),
        soft_wrap=True,
    )
