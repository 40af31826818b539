"""``tailormail keys``: the HTTP API's keys, created (shown once), listed and revoked
(see ``engine.api_keys``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from engine.api_keys import create_key, list_keys, revoke_key
from engine.cli.support import ProjectOption, console, open_engine

keys_app = typer.Typer(help="The HTTP API's keys: create (shown once), list, revoke.")


@keys_app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the key is for (e.g. the app calling).")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help="trigger (send alerts) and/or read; repeat for both."),
    ],
    campaign: Annotated[
        list[str] | None,
        typer.Option("--campaign", "-c", help="Only this campaign (repeatable; default: all)."),
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Create a key and print it: this is the only time it is shown (only its hash is
    stored); give it to the application, which sends it as `Authorization: Bearer KEY`."""
    with open_engine(project) as engine:
        for name_ in campaign or []:
            engine.campaign(name_)  # a typo is an error naming the campaigns there are
        key, text = create_key(engine.db, name, scope, campaign)
    where = ", ".join(key.campaigns) if key.campaigns else "every campaign"
    console.print(Text(f"key {key.id} ({key.name}): {', '.join(key.scopes)} on {where}"))
    console.print(Text(text), soft_wrap=True)
    console.print("Store it now: it is not shown again (revoke it with `tailormail keys revoke`).")


@keys_app.command("list")
def list_(project: ProjectOption = None) -> None:
    """Every key: its id, name, scopes, campaigns, when it was made and revoked (never the
    key itself: only its hash is stored)."""
    with open_engine(project) as engine:
        rows = list_keys(engine.db)
    if not rows:
        console.print("No API keys yet: `tailormail keys create NAME --scope trigger`.")
        return
    table = Table("id", "name", "scopes", "campaigns", "created", "revoked")
    for row in rows:
        table.add_row(
            row.id,
            Text(row.name),
            ", ".join(row.scopes or []),
            Text(", ".join(row.campaigns)) if row.campaigns else "all",
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (`tailormail keys list`).")],
    project: ProjectOption = None,
) -> None:
    """Revoke a key: every request with it is refused, within a second ([api]
    key_cache_seconds: how long an API process trusts a key it checked)."""
    with open_engine(project) as engine:
        key = revoke_key(engine.db, key_id)
    console.print(Text(f"key {key.id} ({key.name}) revoked"))
