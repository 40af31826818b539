"""``tailormail outbox``: read the outbox as a person would, links decoded and clickable.

The ``.eml`` files are quoted-printable, so a tracked link can be split across lines
there; ``read_outbox`` parses them for the command (``plugins.delivery.outbox_cli``,
registered by path and imported only when it runs, so this plugin module stays light).
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

from engine import hookimpl
from engine.hookspecs import CommandRegister

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


@hookimpl
def register_commands(register: CommandRegister) -> None:
    """Register ``tailormail outbox``."""
    register("outbox", "plugins.delivery.outbox_cli:outbox")
