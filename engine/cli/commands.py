"""The ``tailormail`` command line: the Typer app, ``main`` and the core commands.

Every command, built-in or a plugin's, comes through ``register_commands``
(``engine.cli.builtin`` lists these); ``CommandGroup`` imports only the module of the
command being run, and ``--version`` answers before any is looked up.
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from engine.cli.command_group import CommandGroup
from engine.cli.resources import out_of_space
from engine.cli.support import (
    NotInProjectError,
    ProjectOption,
    console,
    err,
    open_engine,
    open_store,
    print_error,
    print_warning,
    remember_project,
)
from engine.errors import TailormailError, TailormailWarning
from engine.plugins import describe_plugins, make_plugin_manager

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(
    name="tailormail",
    cls=CommandGroup,
    help="Personalized scheduled email alerts: a contextual bandit picks each variant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
SAMPLE_FILES = (
    ("recipients", "people.csv"),
    ("items", "items.csv"),
    ("interactions", "interactions.csv"),
)
"""What ``init`` writes and its hint imports, in order."""


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # lazy: only --version reads the metadata

        console.print(f"tailormail {version('tailormail')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    project: ProjectOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Personalized scheduled email alerts: a contextual bandit picks each variant."""
    remember_project(ctx, project)


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")],
    force: Annotated[bool, typer.Option(help="Write into a non-empty directory.")] = False,
) -> None:
    """Scaffold a working project: config, a sample campaign, templates and sample data."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.scaffold import scaffold_project

    written = scaffold_project(directory, force=force)
    console.print(f"Created {len(written)} files in [bold]{directory}[/bold]:")
    for path in written:
        console.print(f"  {path.relative_to(directory)}")
    steps = [
        f"cd {shlex.quote(str(directory))}",
        *(f"tailormail import {kind} {kind_file}" for kind, kind_file in SAMPLE_FILES),
        "tailormail send weekly-picks",
    ]
    console.print("\nNext:\n  " + " && \\\n  ".join(steps), highlight=False, markup=False)


def import_(
    kind: Annotated[str, typer.Argument(help="recipients, items or interactions")],
    file: Annotated[Path, typer.Argument(help="A .csv or .jsonl file.", exists=True)],
    strict: Annotated[
        bool,
        typer.Option(help="Reject interactions naming recipients or items not imported."),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Import recipients, items or interactions; a bad row rejects the whole file."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.audience.importer import import_file

    if kind not in {"recipients", "items", "interactions"}:
        raise TailormailError(f"unknown kind {kind!r}: use recipients, items or interactions")
    with open_engine(project) as engine, progress_bar() as bar:
        task = bar.add_task(f"importing {kind}", total=None)
        summary = import_file(
            engine.db,
            kind,
            file,
            progress=lambda rows: bar.update(task, completed=rows),
            strict=strict,
        )
        bar.update(task, total=summary.rows, completed=summary.rows)
    console.print(
        Text(
            f"Imported {summary.rows} {kind} from {file} "
            f"({summary.inserted} new, {summary.updated} updated)."
        )
    )
    for unknown in summary.unknown:
        print_warning(f"{unknown.describe()}; kept (use --strict to reject such a file)")


def send(
    campaign: Annotated[str, typer.Argument(help="The campaign's name.")],
    run: Annotated[
        str | None, typer.Option("--run", help="Resume this existing run (see `runs`).")
    ] = None,
    new_run: Annotated[
        str | None,
        typer.Option(
            "--new-run", help="Start a new run with this id (a dry run's: send what it showed)."
        ),
    ] = None,
    test_to: Annotated[
        str | None,
        typer.Option("--test-to", help="Send every variant once to this address (no ledger)."),
    ] = None,
    recipient: Annotated[
        str | None, typer.Option("--recipient", help="With --test-to: render for this id.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Report what a new run would send; record no run."),
    ] = False,
    include_new: Annotated[
        bool,
        typer.Option(
            "--include-new",
            help="With --run on a finished run: also send to audience members it has no "
            "row for (joined since); without it, a finished run only retries.",
        ),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Start a new run of a campaign now (or resume one with --run) with a progress bar.

    Exits with status 1 when nothing could be delivered (every row deferred or failed) or
    the audience is empty, 130 on Ctrl-C (saying how to continue).
    """
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.cli import sending as cli_sending
    from engine.sending.real_run import run_campaign
    from engine.sending.runs import choose_run_id, run_breakdown

    if test_to is not None and dry_run:
        raise TailormailError("give either --test-to ADDRESS or --dry-run, not both")
    if recipient is not None and test_to is None:
        raise TailormailError(
            f"--recipient goes with --test-to ADDRESS; to look without sending: "
            f"`tailormail preview {campaign} --recipient {shlex.quote(recipient)}`"
        )
    if dry_run and run is not None:
        raise TailormailError(
            "--dry-run rehearses a new run and cannot resume one: drop --run "
            "(or give --new-run ID to rehearse under that id)"
        )
    with open_engine(project) as engine:
        if engine.campaign(campaign).triggered:  # (an unknown name lists the configured ones)
            raise TailormailError(
                f"campaign {campaign!r} is triggered by the API ([trigger]), not sent as a "
                f"run: trigger it with POST /v1/campaigns/{campaign}/trigger, or see what it "
                'would send with "dry_run": true (docs/api.md)'
            )
        if test_to is not None:
            raise typer.Exit(cli_sending.test_send(engine, campaign, test_to, recipient))
        if dry_run:
            cli_sending.rehearse(engine, campaign, new_run)
            return
        run_id = choose_run_id(engine.db, campaign, resume=run, new=new_run)
        rehearsed = cli_sending.before_rehearsed(engine, campaign, new_run) if new_run else None
        explained = cli_sending.stopped_runs_explained(engine, campaign, run_id)
        with explained, progress_bar() as bar:
            task = bar.add_task(f"sending {campaign}", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            def shards(done: int, total: int) -> None:
                bar.update(task, description=f"sending {campaign} (shards {done}/{total})")

            summary = run_campaign(
                engine,
                campaign,
                run_id=run_id,
                progress=advance,
                shard_progress=shards,
                include_new=include_new or None,
            )
        groups = run_breakdown(engine.db, summary.run_id)
        as_shown = None
        if rehearsed is not None and not summary.paused:  # a paused run decided only some
            as_shown = cli_sending.after_rehearsed(engine, rehearsed)
    table = Table(title=f"run {summary.run_id}")
    columns = (
        "audience",
        "already_done",
        "retried",
        "skipped",
        "sent",
        "deferred",
        "failed",
        "unknown",
    )
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_row(*(str(getattr(summary, column)) for column in columns))
    console.print(table)
    if summary.variants:
        shares = ", ".join(f"{k}: {n}" for k, n in sorted(summary.variants.items()))
        console.print(f"variants sent: {shares}")
    if as_shown is not None:
        console.print(as_shown, soft_wrap=True)
    for reason, count in summary.shard_errors.items():
        print_warning(
            f"{count} of {summary.shards} shards failed on their workers ({reason}); "
            "this process sent their recipients itself"
        )
    for group in groups:
        shown = ", ".join(group.addresses) + (", ..." if group.count > len(group.addresses) else "")
        console.print(
            Text(f"{group.status} {group.count}: {group.reason} ({shown})"), soft_wrap=True
        )
    if status := cli_sending.explain_outcome(summary, include_new):
        raise typer.Exit(status)
    if summary.paused:
        print_error(
            f"campaign {campaign} paused itself: {summary.paused}; run {summary.run_id} "
            f"stopped. Resume with `tailormail resume {campaign}`, then "
            f"`tailormail send {campaign} --run {summary.run_id}`"
        )
        raise typer.Exit(1)
    attempted = summary.sent + summary.deferred + summary.failed + summary.unknown
    if attempted and not summary.sent:
        print_error(
            f"run {summary.run_id}: nothing could be delivered "
            f"({summary.deferred} deferred, {summary.failed} failed, {summary.unknown} unknown)"
        )
        raise typer.Exit(1)


def runs(
    campaign: Annotated[str | None, typer.Argument(help="Only this campaign's runs.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many of the newest runs.")] = 20,
    ids: Annotated[
        bool, typer.Option("--ids", help="Print only the run ids, one per line.")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """List the newest runs: status, ledger counts per status, start and finish times."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.cli.runs_table import print_runs
    from engine.cli.sending import paused_lines
    from engine.sending.run_history import list_runs

    with open_store(project) as store:  # reads what was recorded: no plugins, no templates
        if campaign is not None:
            store.campaign(campaign)
        found = list_runs(store.db, campaign, limit=limit)
        for line in [] if ids else paused_lines(store.db, campaign):
            console.print(line, soft_wrap=True)
    if not found:
        if not ids:
            console.print("no runs yet" + (f" of {campaign}" if campaign else ""))
        return
    print_runs(console, found, "runs" + (f" of {campaign}" if campaign else ""), ids)


def report(
    campaign: Annotated[str, typer.Argument(help="The campaign's name.")],
    items: Annotated[
        bool,
        typer.Option("--items", help="Clicks and CTR per item and per position instead."),
    ] = False,
    project: ProjectOption = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="CTR chart (default: reports/CAMPAIGN-ctr.png).")
    ] = None,
) -> None:
    """Per variant: sends, clicks, CTR with a 95% interval, unsubscribes (or per item)."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.cli.report_tables import print_learning_report
    from engine.reports.items import item_report, item_tables
    from engine.reports.variants import campaign_report

    if items:
        with open_engine(project) as engine:
            found = item_report(engine, campaign)
        for table in item_tables(found):
            console.print(table)
        return
    with open_engine(project) as engine:
        rows = campaign_report(engine, campaign)
    table = Table(title=f"campaign {campaign}")
    for column in ("variant", "sends", "clicks", "CTR", "95% interval", "unsubscribes"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for row in rows:
        low, high = row.ctr_interval
        table.add_row(
            row.variant,
            str(row.sends),
            str(row.clicks),
            f"{row.ctr:.1%}",
            f"{low:.1%} - {high:.1%}",
            str(row.unsubscribes),
        )
    console.print(table)
    with open_engine(project) as engine:
        chart = png or engine.settings.path("reports") / f"{campaign}-ctr.png"
        print_learning_report(engine, campaign, console, chart)


def rewards(project: ProjectOption = None) -> None:
    """Join events whose attribution window closed, and let each policy learn; say what
    still waits for its attribution window."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.cli.report_tables import print_rewards
    from engine.feedback.reward_job import join_rewards

    with open_engine(project) as engine:
        summary = join_rewards(engine)
        print_rewards(engine, summary, console)


def export(
    campaign: Annotated[str, typer.Argument(help="The campaign's name.")],
    format: Annotated[str, typer.Option("--format", "-f", help="jsonl or dsjson.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Export the rewarded decisions as a logged-bandit data set (JSONL or VW DSJSON)."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.learning.export import FORMATS, export_decisions, export_to_file

    if format not in FORMATS:
        raise TailormailError(f"unknown format {format!r}: use {' or '.join(FORMATS)}")
    with open_engine(project) as engine:
        if output is None:
            count = export_decisions(engine, campaign, format, sys.stdout)
        else:
            count = export_to_file(engine, campaign, format, output)
    err.print(f"exported {count} decisions of {campaign} as {format}")


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    scheduler: Annotated[
        bool,
        typer.Option(
            help="Campaign for scheduler leadership (one leader per database runs the "
            "schedules); --no-scheduler serves tracking only, for a web tier."
        ),
    ] = True,
    project: ProjectOption = None,
) -> None:
    """Serve tracking (clicks, opens, unsubscribes, webhooks) and run the schedules."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.cli.api import start_api_process
    from engine.cli.listening import listen, stopped_by_signal
    from engine.sending.scheduler import LeaderScheduler
    from engine.web import serve as serve_web

    with open_engine(project) as engine:
        engine.serve_webhooks()  # a missing webhook secret stops serve before leadership
        host = host or engine.settings.web.host
        port = engine.settings.web.port if port is None else port
        sock = listen(host, port)  # a port in use stops here, before any leadership
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        service = LeaderScheduler(engine) if scheduler else None
        if service is None:
            console.print("scheduler: off (tracking only)")
        elif service.start():
            console.print(f"scheduler: leader ({service.leadership.owner})")
        else:
            console.print("scheduler: standby (another process leads; taking over if it dies)")
        console.print(f"tracking server on http://{host}:{port}")
        api = start_api_process(engine)
        try:
            with stopped_by_signal():  # Ctrl-C or SIGTERM: a clean stop, no traceback
                serve_web(engine, host, port, log_level="info", sock=sock)
        finally:
            if api is not None:
                api.stop()
            if service is not None:
                service.stop()
            sock.close()
    console.print("stopped: the tracking server, its writer and the scheduler")


def plugins(project: ProjectOption = None) -> None:
    """List the loaded plugins and the hooks each implements."""
    try:
        with open_engine(project) as engine:
            rows = describe_plugins(engine.pm)
    except NotInProjectError:  # outside a project: what is installed, no project settings
        rows = describe_plugins(make_plugin_manager())
    table = Table(title="plugins")
    table.add_column("plugin")
    table.add_column("version")
    table.add_column("hooks")
    for row in rows:
        table.add_row(row["name"], row["version"] or "built-in", ", ".join(row["hooks"]))
    console.print(table)


def demo(
    directory: Annotated[Path, typer.Option(help="Working directory.")] = Path("demo-run"),
    rounds: Annotated[int, typer.Option(help="Campaign rounds.")] = 10,
    recipients: Annotated[int, typer.Option(help="Simulated recipients.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Simulate a population reading and clicking real emails; vw against uniform."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.demo.tour import run_demo

    run_demo(directory, rounds=rounds, recipients=recipients, seed=seed, console=console)


def progress_bar() -> Progress:
    # lazy: only the commands that show progress bars need rich.progress (~20 ms)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def main() -> None:
    """Entry point: configuration and data errors end with a message and status 2."""
    warnings.showwarning = _show_warning
    try:
        app()
    except TailormailError as exc:
        print_error(str(exc))
        sys.exit(2)
    except Exception as exc:
        if (cause := out_of_space(exc)) is None:
            raise
        print_error(cause)  # a full disk is one line, not a traceback from the driver
        sys.exit(2)


def _show_warning(
    message: Warning | str, category: type[Warning], *args: object, **kwargs: object
) -> None:
    if issubclass(category, TailormailWarning):
        print_warning(str(message))
    else:
        _default_showwarning(message, category, *args, **kwargs)  # type: ignore[arg-type]


_default_showwarning = warnings.showwarning
