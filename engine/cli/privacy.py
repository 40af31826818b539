"""``tailormail forget`` and ``tailormail retention``: erasing people's data on request and
on schedule (see ``engine.audience.forgetting``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from engine.audience.forgetting import apply_retention, compact_database
from engine.audience.forgetting import forget as erase
from engine.cli.support import ProjectOption, console, err, open_engine
from engine.errors import ConfigError, TailormailError

if TYPE_CHECKING:
    from engine.audience.forgetting import ForgetSummary


def forget(
    recipient: Annotated[
        str | None, typer.Argument(help="The recipient's id or email address.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="Then VACUUM the SQLite database and empty its WAL (stop `serve` first); "
            "alone, finishes an earlier forget that a running server kept from completing.",
        ),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Erase a person's data, in the database and in every file tailormail wrote; keep a
    keyed hash of their address so they are never mailed again, and their decisions and
    rewards, tied to nobody, for learning."""

    if recipient is None and not compact:
        raise TailormailError(
            "forget needs a recipient id or address (or --compact to finish an earlier one)"
        )
    with open_engine(project) as engine:
        if recipient is not None:
            if not yes:
                typer.confirm(
                    f"Erase everything about {recipient!r}? This cannot be undone", abort=True
                )
            summary = erase(engine, recipient)
            _print_summary(recipient, summary)
            compaction = summary.compaction
        if compact:
            compaction = compact_database(engine)
            if compaction is None:
                console.print("PostgreSQL: nothing to compact here (see docs/security.md)")
            elif compaction.done:
                console.print("database vacuumed; its write-ahead log is empty")
    if compaction is not None and not compaction.done:
        err.print(
            Text(
                "the erased data is not yet overwritten in the database file: another "
                "process is reading the database (a running `tailormail serve`?). Stop it, "
                "then run `tailormail forget --compact`."
            ),
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _print_summary(recipient: str, summary: ForgetSummary) -> None:
    files = f"{summary.messages} stored messages and {summary.files} other files"
    if summary.already:
        console.print(
            Text(
                f"{recipient} was forgotten before: nothing is left to erase in the database; "
                f"{files} erased."
            ),
            soft_wrap=True,
        )
        return
    who = ", ".join(summary.recipient_ids) or "no recipient row"
    console.print(
        Text(
            f"Forgot {recipient} ({who}): {summary.addresses} address(es) kept only as a "
            f"keyed hash, {summary.ledger_rows} ledger rows and {summary.events} events "
            f"anonymized, {summary.interactions} interactions, {summary.suppressions} "
            f"plain-text suppressions and {summary.messages} stored messages deleted, "
            f"{summary.files} other files (previews, test copies, exports, logs) cleaned."
        ),
        soft_wrap=True,
    )


def retention(project: ProjectOption = None) -> None:
    """Anonymize ledger rows and events older than the retention setting, now (under
    'tailormail serve' an hourly job does it)."""

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
