"""``tailormail schedule`` (each campaign's next fire times, as the scheduler reads its
crontab line) and ``tailormail check`` (every start-up validation, sending nothing)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.text import Text

from engine.cli.support import ProjectOption, console, open_engine
from engine.errors import TailormailError
from engine.realmail import address_problems
from engine.schedules import next_fire_times, parse_schedule

if TYPE_CHECKING:
    from engine.app import Engine


ReadinessCheck = Callable[["Engine"], list[str]]
"""A check of whether the project may send real mail: the problems it finds, one line each."""


def _real_addresses(engine: Engine) -> list[str]:
    """The keys that real mail would refuse (``engine.realmail``), whatever the backend."""

    return address_problems(engine.settings, engine.campaigns.values())


READINESS_CHECKS: list[ReadinessCheck] = [_real_addresses]
"""What ``check`` asks about real mail, in order. A problem makes ``check`` exit 1 only
when the configured backend sends real mail (staging, ``allow_test_addresses``); with a
backend that keeps mail on this machine it is what to change before switching."""

AfterOption = Annotated[
    str | None,
    typer.Option(
        "--after",
        help="Show fire times after this moment (ISO, e.g. 2026-03-01T00:00; in the "
        "scheduler's time zone unless it names one). Default: now.",
    ),
]
CountOption = Annotated[int, typer.Option("--count", "-n", min=1, max=100, help="How many.")]


def _start(after: str | None, zone: str) -> datetime | None:
    if after is None:
        return None
    try:
        moment = datetime.fromisoformat(after)
    except ValueError:
        raise TailormailError(
            f"--after {after!r} is not a date and time; write it like 2026-03-01T09:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


def print_schedules(
    engine: Engine, names: list[str], count: int = 5, after: datetime | None = None
) -> None:
    """Each campaign's crontab line and its next ``count`` fire times, in its time zone."""
    zone = engine.settings.scheduler.timezone
    console.print(Text(f"next fire times ({zone}, the [scheduler] timezone):"))
    for name in names:
        schedule = engine.campaign(name).schedule
        if schedule is None:
            console.print(
                Text(f"  {name}: no schedule (sent only by `tailormail send {name}`)"),
                soft_wrap=True,
            )
            continue
        parsed = parse_schedule(schedule)
        console.print(Text(f"  {name}: {schedule}"), soft_wrap=True)
        shape = "%a %Y-%m-%d %H:%M:%S %Z" if parsed.seconds != {0} else "%a %Y-%m-%d %H:%M %Z"
        for moment in next_fire_times(parsed.trigger(zone), count, after):
            console.print(Text(f"    {moment.strftime(shape)}"), soft_wrap=True)


def schedule(
    campaign: Annotated[str | None, typer.Argument(help="Only this campaign.")] = None,
    count: CountOption = 5,
    after: AfterOption = None,
    project: ProjectOption = None,
) -> None:
    """Show each campaign's next fire times (crontab(5) reading) in its time zone."""
    with open_engine(project) as engine:
        names = [engine.campaign(campaign).name] if campaign else sorted(engine.campaigns)
        if not names:
            console.print("no campaigns in config/campaigns/")
            return
        zone = engine.settings.scheduler.timezone
        print_schedules(engine, names, count, _start(after, zone))


def check(
    count: CountOption = 5,
    after: AfterOption = None,
    project: ProjectOption = None,
) -> None:
    """Run every start-up validation and show the next fire times; sends nothing.

    Exits 2 on a configuration error (the same one line any command would print), 1 when
    the backend sends real mail (staging) while the project is not ready for it, else 0.
    """
    # Opening the engine is the start-up validation: settings, time zones, campaigns,
    # schedules, plugins, templates, backends, webhooks and the database (migrated).
    with open_engine(project) as engine:
        settings = engine.settings
        names = sorted(engine.campaigns)
        for name in names:
            engine.check_audience(engine.campaign(name))  # a filter typo is named here
        campaigns = f"{len(names)} campaign{'' if len(names) == 1 else 's'}"
        console.print(
            Text(
                f"configuration: ok (settings, {campaigns}, plugins, templates, backend "
                f"{settings.delivery.backend!r}, executor {settings.workers.executor!r}, "
                "database)"
            ),
            soft_wrap=True,
        )
        for name in names:
            size = engine.audience_size(engine.campaign(name))
            console.print(Text(f"  {name}: audience of {size}"), soft_wrap=True)
        print_schedules(engine, names, count, _start(after, settings.scheduler.timezone))
        problems = [line for found in READINESS_CHECKS for line in found(engine)]
        real = engine.make_backend().reaches_other_machines()
    for line in problems:
        console.print(Text(f"not ready for real mail: {line}"), soft_wrap=True)
    if not problems:
        console.print("ready for real mail: links and senders are public addresses.")
    elif not real:
        backend = settings.delivery.backend
        console.print(
            Text(
                f"(backend {backend!r} keeps mail on this machine: change these before real mail)"
            ),
            soft_wrap=True,
        )
    console.print("nothing was sent.")
    if problems and real:
        raise typer.Exit(1)
