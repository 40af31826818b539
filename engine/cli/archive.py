"""``tailormail archive``: move the rows of runs that ended long ago out of the database
into one compressed file per run (see ``engine.ledger.archive``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from engine.cli.commands import progress_bar
from engine.cli.support import ProjectOption, console, open_engine
from engine.clock import utcnow
from engine.durations import format_duration, parse_duration
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.ledger.archive import ArchivedRun


def archive(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Archive the runs that ended longer ago than this (e.g. 180d, 26w); it must "
            "outlast every attribution window and frequency cap.",
        ),
    ],
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Directory of the archive files (default: <project>/archive)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the runs and rows; archive nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Move the ledger rows, events and rewards of runs that ended before a cutoff into
    <to>/<campaign>/<run>-<hash>.jsonl.gz (decisions and outcomes, nobody's identity), and delete
    them from the database: the ledger stops growing with every run ever sent."""
    # lazy: the archive's module (and SQLAlchemy's statements) load when the command runs
    from engine.ledger.archive import archive_run, ended_runs

    try:
        age = parse_duration(before)
    except ValueError as exc:
        raise ConfigError(f"--before: {exc}") from None
    with open_engine(project) as engine:
        engine.check_outlasts(f"--before {format_duration(age)}", age, "archived")
        directory = to if to is not None else engine.settings.path("archive")
        cutoff = utcnow() - age
        runs = ended_runs(engine.db, cutoff)
        total = sum(run.rows for run in runs)
        if not runs:
            console.print(f"No run ended before {cutoff:%Y-%m-%d %H:%M} UTC: nothing to archive.")
            return
        console.print(
            f"{len(runs)} run(s) ended before {cutoff:%Y-%m-%d %H:%M} UTC, {total:,} ledger rows"
        )
        if dry_run:
            console.print(_table(runs, "would archive"))
            return
        if not yes:
            typer.confirm(
                f"Move them to {directory} and delete them from the database?", abort=True
            )
        done = []
        with progress_bar() as progress:
            task = progress.add_task("archiving", total=total)
            for run in runs:
                done.append(archive_run(engine.db, run, directory))
                progress.advance(task, run.rows)
    console.print(_table(done, "archived"))
    console.print(
        Text(
            f"Archived {len(done)} run(s): {sum(r.rows for r in done):,} ledger rows, "
            f"{sum(r.events for r in done):,} events and {sum(r.rewards for r in done):,} "
            f"rewards, in {directory}. On PostgreSQL, VACUUM gives their space back to new "
            "rows; on SQLite, `tailormail forget --compact` shrinks the file.",
        ),
        soft_wrap=True,
    )


def _table(runs: Sequence[ArchivedRun], title: str) -> Table:
    table = Table(title=title)
    for column in ("run", "campaign", "ended", "rows", "file"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for run in runs:
        table.add_row(
            run.run_id,
            run.campaign,
            f"{run.ended_at:%Y-%m-%d %H:%M}",
            f"{run.rows:,}",
            str(run.path) if run.path else "",
        )
    return table
