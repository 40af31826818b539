"""CLI commands around sending: ``preview``, ``resume``, and ``send --test-to/--dry-run``.

``register(app)`` adds ``preview`` and ``resume`` to the Typer app; ``send`` (in
``engine.cli.commands``) hands its ``--test-to`` and ``--dry-run`` options to ``test_send`` and
``rehearse``, and a ``--new-run`` of a dry run's id to ``before_rehearsed`` and
``after_rehearsed``; ``runs`` shows ``paused_lines``.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from engine.cli.resources import out_of_space
from engine.cli.support import ProjectOption, console, open_engine, print_error, print_warning
from engine.errors import CampaignBusyError, TailormailError
from engine.types import SendStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

    from engine.app import Engine
    from engine.sending.pipeline import RunSummary
    from engine.sending.rehearsal_record import RehearsalRecord

INTERRUPTED = 130
"""The exit status of a send stopped by Ctrl-C (128 + SIGINT, as shells report it)."""

SHOWN = 10
"""How many would-be messages a dry run lists."""


def preview(
    campaign: Annotated[str, typer.Argument(help="The campaign's name.")],
    recipient: Annotated[
        str | None, typer.Option("--recipient", help="Render for this recipient id.")
    ] = None,
    variant: Annotated[str | None, typer.Option("--variant", help="Only this variant.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the files.")] = Path("preview"),
    project: ProjectOption = None,
) -> None:
    """Write each variant as HTML and .eml for one recipient (opens nothing, sends nothing)."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.sending.rehearsal import render_variants, write_preview

    with open_engine(project) as engine:
        messages = render_variants(engine, campaign, recipient_id=recipient, variant=variant)
        folder = out if out.is_absolute() else Path.cwd() / out
        written = write_preview(messages, folder, engine)
    for message in messages:
        console.print(
            Text(f"{message.metadata['variant']}: {message.subject} (to {message.to_address})")
        )
    console.print(f"wrote {len(written)} files to {folder}")


def resume(
    campaign: Annotated[str, typer.Argument(help="The paused campaign's name.")],
    project: ProjectOption = None,
) -> None:
    """Lift a campaign's pause (complaint or bounce rate); its rates count afresh from now."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.sending.deliverability import resume as lift
    from engine.sending.run_history import list_runs

    with open_engine(project) as engine:
        engine.campaign(campaign)  # an unknown name lists the configured ones
        lifted = lift(engine.db, campaign)
        stopped = [r.run_id for r in list_runs(engine.db, campaign) if r.status == "paused"]
    if lifted is None:
        console.print(f"campaign {campaign} is not paused; nothing to resume")
        return
    console.print(Text(f"campaign {campaign} resumed (it was paused: {lifted.reason})"))
    for run_id in stopped:
        console.print(
            Text(f"continue its paused run with: tailormail send {campaign} --run {run_id}")
        )


def paused_lines(db: SAEngine, campaign: str | None = None) -> list[Text]:
    """One line per paused campaign (of ``campaign`` only, when given) for ``runs``."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.sending.run_history import paused_campaigns

    return [
        Text(
            f"campaign {pause.campaign} PAUSED since {pause.paused_at:%Y-%m-%d %H:%M:%S}: "
            f"{pause.reason}; resume with `tailormail resume {pause.campaign}`",
            style="bold red",
        )
        for pause in paused_campaigns(db)
        if campaign is None or pause.campaign == campaign
    ]


def test_send(engine: Engine, campaign: str, address: str, recipient: str | None) -> int:
    """``send --test-to``: every variant once to ``address``; the exit status."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.sending.rehearsal import send_test

    results = send_test(engine, campaign, address, recipient_id=recipient)
    table = Table(title=f"test send of {campaign} to {address}")
    for column in ("variant", "status", "detail"):
        table.add_column(column)
    for variant, result in zip(engine.campaign(campaign).variants, results, strict=True):
        table.add_row(
            variant.key, result.status.value, Text(result.error or result.provider_id or "")
        )
    console.print(table)
    console.print("nothing was written to the ledger; the links record nothing")
    return 0 if all(r.status is SendStatus.SENT for r in results) else 1


def rehearse(engine: Engine, campaign: str, run_id: str | None = None) -> None:
    """``send --dry-run``: what a run would send now, and to whom; nothing is recorded but
    the rehearsal record, under a run id it prints (``run_id`` if given)."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.sending.rehearsal import dry_run
    from engine.sending.runs import check_new_run_id

    report = dry_run(engine, campaign, run_id and check_new_run_id(run_id))
    summary = report.summary
    table = Table(title=f"dry run of {campaign}: nothing sent, nothing recorded")
    for column in ("audience", "skipped", "would send"):
        table.add_column(column, justify="right")
    table.add_row(str(summary.audience), str(summary.skipped), str(summary.sent))
    console.print(table)
    if summary.variants:
        shares = ", ".join(f"{k}: {n}" for k, n in sorted(summary.variants.items()))
        console.print(f"variants: {shares}")
    for reason, count in report.skip_reasons.most_common():
        console.print(Text(f"skipped {count}: {reason}"))
    for to, variant, subject in report.would_send[:SHOWN]:
        console.print(Text(f"  {to}  [{variant}]  {subject}"))
    if len(report.would_send) > SHOWN:
        console.print(f"  ... and {len(report.would_send) - SHOWN} more")
    undecided = summary.audience - summary.skipped - summary.sent
    if summary.paused:
        console.print(Text(f"the campaign is paused: {summary.paused}", style="bold red"))
    elif undecided:  # the audience changed while the dry run read it
        console.print(Text(f"{undecided} of the audience changed while the dry run read it"))
    console.print(
        Text(
            f"decided as run {summary.run_id}; to send exactly this: "
            f"tailormail send {campaign} --new-run {summary.run_id}"
        ),
        soft_wrap=True,
    )


def before_rehearsed(engine: Engine, campaign: str, run_id: str) -> RehearsalRecord | None:
    """``send --new-run ID``: the dry run that made ``run_id`` (None: no dry run did), after
    printing what changed since it (the model, the campaign, the audience)."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.sending import rehearsal_record

    record = rehearsal_record.load(engine, campaign, run_id)
    if record is None:
        console.print(
            Text(f"no dry run of {campaign} made run {run_id}: sending it as a new run"),
            soft_wrap=True,
        )
        return None

    for change in rehearsal_record.changes_since(engine, record):
        print_warning(f"{change}; this run may send otherwise than it showed")
    return record


def after_rehearsed(engine: Engine, record: RehearsalRecord) -> Text:
    """The line that says how the run sent compares with its dry run (the record goes)."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.sending import rehearsal_record

    found = rehearsal_record.compare(engine, record)
    rehearsal_record.discard(engine, record.run_id)
    shown = len(record.choices)
    line = f"{found.same} of {shown} recipients got the variant (or skip) the dry run showed"
    notes = [
        f"{what}: {n}"
        for what, n in (
            ("another variant or skip", found.other),
            ("left the audience", found.left),
            ("not in the dry run", found.joined),
        )
        if n
    ]
    return Text(line + (f" ({'; '.join(notes)})" if notes else ""))


def continue_command(campaign: str, run_id: str) -> str:
    """The exact command that continues run ``run_id``, quoted for a shell."""
    return f"tailormail send {shlex.quote(campaign)} --run {shlex.quote(run_id)}"


def _went_out(engine: Engine, campaign: str, run_id: str, when: str, then: str) -> str:
    """What run ``run_id`` has sent so far (every worker's) ``when`` it stopped, and the
    command that continues it (a run that never opened: the command that starts again)."""
    # lazy: this command's own modules, imported when it runs (`runs` imports this module too)
    from engine.ledger import RunLedger
    from engine.models import LedgerStatus

    ledger = RunLedger(engine, run_id, campaign)
    if not ledger.exists():
        return f"run {run_id} did not start; {then}run `tailormail send {campaign}`"
    sent = ledger.counts().get(LedgerStatus.SENT, 0)
    return (
        f"{sent} message{'' if sent == 1 else 's'} of run {run_id} went out {when}; "
        f"{then}continue with `{continue_command(campaign, run_id)}`"
    )


@contextmanager
def stopped_runs_explained(engine: Engine, campaign: str, run_id: str) -> Iterator[None]:
    """Around a run: an error or Ctrl-C that stops it says how many messages went out and
    the command that continues it (Ctrl-C exits 130; a full disk is one line, no traceback)."""

    try:
        yield
    except KeyboardInterrupt:
        print_error(f"interrupted: {_went_out(engine, campaign, run_id, 'before Ctrl-C', '')}")
        raise typer.Exit(INTERRUPTED) from None
    except CampaignBusyError:
        raise  # raised before the run opened: it names the live run and what to do
    except Exception as exc:
        cause = str(exc) if isinstance(exc, TailormailError) else out_of_space(exc)
        if cause is None:
            raise
        went_out = _went_out(engine, campaign, run_id, "before it stopped", "once that is fixed, ")
        raise TailormailError(f"{cause}; {went_out}") from exc


def explain_outcome(summary: RunSummary, include_new: bool) -> int:
    """Tell an empty audience from one whose members were all skipped, and say who a
    resumed finished run left out; returns the exit status (1: the audience is empty)."""

    if summary.empty:
        print_error(summary.empty)
        return 1
    if summary.left_out and not include_new:
        print_warning(
            f"run {summary.run_id} had finished: only its deferred and fixable failed rows "
            f"were retried; {summary.left_out} audience members without a row in it were "
            "not sent (add --include-new to send them too)"
        )
    attempted = summary.sent + summary.deferred + summary.failed + summary.unknown
    if summary.skipped and not attempted:
        console.print(
            Text(
                f"nobody was sent: all {summary.skipped} recipients this run reached were "
                "skipped (reasons above); the audience itself is not empty"
            )
        )
    return 0
