"""Turn a rendered ``Message`` into a standards-compliant MIME email, shared by the backends."""

from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage
from email.utils import formatdate

from engine.types import Message

# Headers built from the Message's own fields; ``message.headers`` may not set them too,
# or the envelope and the visible headers could disagree.
RESERVED_HEADERS = frozenset({"from", "to", "subject", "message-id", "date"})

# RFC 5322 field names: printable US-ASCII except the colon, no spaces.
_FIELD_NAME = re.compile(r"[!-9;-~]+")


def check_header(name: str, value: str) -> None:
    """Raise ``ValueError`` naming the header if ``name`` or ``value`` could inject headers."""
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name!r} contains a line break (CR or LF)")


def format_message_id(message_id: str) -> str:
    """``message_id`` as a Message-ID header value: wrapped in angle brackets if bare."""
    stripped = message_id.strip()
    if stripped.startswith("<") and stripped.endswith(">"):
        return stripped
    return f"<{stripped}>"


def build_mime(message: Message) -> EmailMessage:
    """A multipart/alternative email (text, then HTML; utf-8) with ``message``'s headers.

    Raises ``ValueError`` naming the header when any header name or value would allow
    header injection, or when ``message.headers`` sets a header built from the fields.
    """
    core = {
        "From": message.from_address,
        "To": message.to_address,
        "Subject": message.subject,
        "Message-ID": format_message_id(message.message_id),
        "Date": formatdate(localtime=False, usegmt=True),
    }
    for name, value in core.items():
        check_header(name, value)
    for name, value in message.headers.items():
        check_header(name, value)
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} must be set through the Message fields")

    # SMTP policy: CRLF line endings, as on the wire and in .eml files.
    mime = EmailMessage(policy=email.policy.SMTP)
    for name, value in (*core.items(), *message.headers.items()):
        mime[name] = value
    # quoted-printable keeps the body 7-bit clean for servers without 8BITMIME.
    mime.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    mime.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return mime
