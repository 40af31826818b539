"""``tailormail outbox``: read the outbox as a person would, links decoded and clickable.

The ``.eml`` files are quoted-printable, so a tracked link can be split across lines
there; this command parses them and prints each message's recipient, subject and links.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine import hookimpl
from engine.cli.support import ProjectOption, open_engine
from plugins.delivery.outbox import OutboxBackend

_HREF = re.compile(r"<a\b[^>]*\bhref=\"([^\"]+)\"", re.IGNORECASE)


@dataclass(frozen=True)
class OutboxMessage:
    """One delivered message as the recipient sees it."""

    path: Path
    to: str
    subject: str
    links: list[str]


def read_outbox(folder: Path, newest: int | None = None) -> Iterator[OutboxMessage]:
    """The messages in ``folder`` (by send id, newest last), parsed."""
    files = sorted(folder.glob("*.eml"))
    for path in files[-newest:] if newest else files:
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = (
            parsed.get_body(("html",)) if isinstance(parsed, email.message.EmailMessage) else None
        )
        html = body.get_content() if body is not None else ""
        links = list(dict.fromkeys(unescape(h) for h in _HREF.findall(html)))  # in order
        yield OutboxMessage(path, str(parsed["To"]), str(parsed["Subject"]), links)


def outbox(
    newest: Annotated[int, typer.Option(help="How many of the newest messages.")] = 3,
    project: ProjectOption = None,
) -> None:
    """Show the newest messages in the outbox with their tracked links."""
    with open_engine(project) as engine:
        backend = engine.make_backend("outbox")
    assert isinstance(backend, OutboxBackend)
    folder = backend.folder
    console = Console()
    if not folder.is_dir():
        console.print(f"no outbox at {folder}")
        raise typer.Exit(1)
    for message in read_outbox(folder, newest):
        console.print(f"[bold]{message.path.name}[/bold] to {message.to}: {message.subject}")
        for link in message.links:
            console.print(f"  {link}", soft_wrap=True, highlight=False)


@hookimpl
def register_commands(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register ``tailormail outbox``."""
    register("outbox", outbox)
