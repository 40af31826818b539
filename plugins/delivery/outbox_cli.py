"""``tailormail outbox``: the newest messages in the outbox with their tracked links.

Loaded by the command line only, when ``outbox`` runs (``plugins.delivery.outbox_command``
registers it by path).
"""

from __future__ import annotations

from typing import Annotated

import typer

from engine.cli.support import ProjectOption, console, open_engine
from plugins.delivery.outbox import OutboxBackend
from plugins.delivery.outbox_command import read_outbox


def outbox(
    newest: Annotated[int, typer.Option(help="How many of the newest messages.")] = 3,
    project: ProjectOption = None,
) -> None:
    """Show the newest messages in the outbox with their tracked links."""
    with open_engine(project) as engine:
        backend = engine.make_backend("outbox")
    assert isinstance(backend, OutboxBackend)
    folder = backend.folder
    if not folder.is_dir():
        console.print(f"no outbox at {folder}")
        raise typer.Exit(1)
    for message in read_outbox(folder, newest):
        console.print(f"[bold]{message.path.name}[/bold] to {message.to}: {message.subject}")
        for link in message.links:
            console.print(f"  {link}", soft_wrap=True, highlight=False)
