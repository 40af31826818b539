"""``tailormail subscriptions``: status webhooks out (``engine.feedback.status_webhooks``):
subscribe a URL (its signing secret shown once), list, remove, inspect and replay the
dead letters, and dispatch the due deliveries once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from engine.cli.support import ProjectOption, console, open_store
from engine.errors import TailormailError
from engine.feedback.status_webhooks import (
    EVENT_TYPES,
    OutboundPolicy,
    add_subscription,
    dead_letters,
    dispatch_due,
    list_subscriptions,
    remove_subscription,
    replay,
)

if TYPE_CHECKING:
    from engine.settings import Settings

subscriptions_app = typer.Typer(
    help="Status webhooks out: subscribe a URL to triggers' outcomes, list, remove, replay."
)


def _policy(settings: Settings) -> OutboundPolicy:
    """The ``[api.webhooks]`` settings."""
    return OutboundPolicy.from_settings(settings.api.webhooks)


def _entry(first: str, second: str) -> None:
    """One listed thing: a line its id starts, never cut, and an indented line of details."""
    console.print(Text(first), soft_wrap=True)
    console.print(Text(f"  {second}"), soft_wrap=True)


def _scope(events: list[str] | None, campaigns: list[str] | None) -> str:
    what = ", ".join(events) if events else "every outcome"
    return f"{what} of {', '.join(campaigns) if campaigns else 'every campaign'}"


def _when(moment: object) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else ""


@subscriptions_app.command()
def add(
    url: Annotated[str, typer.Argument(help="Where to POST (https).")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event", "-e", help=f"Only this outcome (repeatable): {', '.join(EVENT_TYPES)}."
        ),
    ] = None,
    campaign: Annotated[
        list[str] | None,
        typer.Option("--campaign", "-c", help="Only this campaign (repeatable; default: all)."),
    ] = None,
    allow_private: Annotated[
        bool,
        typer.Option("--allow-private", help="Allow a private, loopback or link-local address."),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Subscribe URL to triggers' outcomes and print its signing secret: this is the only
    time it is shown; the receiver verifies every POST with it (Standard Webhooks)."""
    with open_store(project) as store:
        for name in campaign or []:
            store.campaign(name)  # a typo is an error naming the campaigns there are
        row, secret = add_subscription(
            store.db,
            url,
            events=event,
            campaigns=campaign,
            allow_private=allow_private,
            policy=_policy(store.settings),
        )
    scope = _scope(row.events, row.campaigns)
    console.print(Text(f"subscription {row.id}: {row.url} ({scope})"), soft_wrap=True)
    console.print(Text(secret), soft_wrap=True)
    console.print("Store the secret now: it is not shown again.")


@subscriptions_app.command("list")
def list_(project: ProjectOption = None) -> None:
    """Every subscription: its id and URL, then its outcomes and campaigns, who made it,
    when, and when it was removed (never its secret)."""
    with open_store(project) as store:
        rows = list_subscriptions(store.db)
    if not rows:
        console.print("No webhook subscriptions yet: `tailormail subscriptions add URL`.")
        return
    for row in rows:
        by = f"key {row.key_id}" if row.key_id else "the command line"
        removed = f", removed {_when(row.disabled_at)}" if row.disabled_at else ""
        _entry(
            f"{row.id}  {row.url}",
            f"{_scope(row.events, row.campaigns)}; made {_when(row.created_at)} by {by}{removed}",
        )


@subscriptions_app.command()
def remove(
    sub_id: Annotated[str, typer.Argument(help="The subscription's id (`subscriptions list`).")],
    project: ProjectOption = None,
) -> None:
    """Remove a subscription at once: nothing more is posted to it."""
    with open_store(project) as store:
        row = remove_subscription(store.db, sub_id)
    console.print(Text(f"subscription {row.id} ({row.url}) removed"))


@subscriptions_app.command("dead-letters")
def dead_letters_(
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 100,
    project: ProjectOption = None,
) -> None:
    """The deliveries every attempt failed, newest first (`subscriptions replay` retries)."""
    with open_store(project) as store:
        rows = dead_letters(store.db, limit)
    if not rows:
        console.print("No dead letters.")
        return
    for row in rows:
        trigger = f" of trigger {row.trigger_id}" if row.trigger_id else ""
        _entry(
            f"{row.id}  {row.subscription_id}  {row.event_type}{trigger}",
            f"{row.attempts} attempts from {_when(row.created_at)}: {row.last_error or ''}",
        )


@subscriptions_app.command("replay")
def replay_(
    delivery_id: Annotated[
        str | None, typer.Argument(help="A dead delivery's id (`subscriptions dead-letters`).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead delivery.")] = False,
    project: ProjectOption = None,
) -> None:
    """Put dead deliveries back in line, due now (the next `subscriptions dispatch`, or the
    scheduler, posts them)."""
    if (delivery_id is None) == (not all_):
        raise TailormailError("give a dead delivery's id or --all (one of them)")
    with open_store(project) as store:
        count = replay(store.db, "all" if all_ else str(delivery_id))
    console.print(f"{count} {'delivery' if count == 1 else 'deliveries'} back in line")


@subscriptions_app.command()
def dispatch(
    limit: Annotated[int, typer.Option(help="Post at most this many.")] = 100,
    project: ProjectOption = None,
) -> None:
    """Post the due deliveries once and print what came of them."""
    with open_store(project) as store:
        summary = dispatch_due(store.db, limit=limit, policy=_policy(store.settings))
    console.print(
        f"{summary.delivered} delivered, {summary.retrying} to retry, {summary.dead} dead"
        + (f", {summary.lost} taken by another dispatcher" if summary.lost else "")
    )
