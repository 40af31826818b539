"""Turn a rendered ``Message`` into a standards-compliant MIME email, shared by the backends.

In the engine (once ``plugins.delivery.mime``) because rehearsals write ``.eml`` files too,
and the engine never imports a plugin."""

from __future__ import annotations

import binascii
import email.policy
import io
import re
import secrets
from email import charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message as MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, parseaddr

from engine.types import Message

# Headers built from the Message's own fields; ``message.headers`` may not set them too,
# or the envelope and the visible headers could disagree.
RESERVED_HEADERS = frozenset({"from", "to", "subject", "message-id", "date"})

# quoted-printable keeps the body 7-bit clean for servers without 8BITMIME.
_UTF8_QP = charset.Charset("utf-8")
_UTF8_QP.body_encoding = charset.QP

_ADDRESS_HEADERS = frozenset({"from", "to", "reply-to", "cc"})

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


def checked_headers(message: Message) -> list[tuple[str, str]]:
    """Every header of ``message``: From, To, Subject, Message-ID, Date, then its own.

    Raises ``ValueError`` naming the header when a name or value would allow header
    injection, or when ``message.headers`` sets a header built from the fields.
    """
    core = [
        ("From", message.from_address),
        ("To", message.to_address),
        ("Subject", message.subject),
        ("Message-ID", format_message_id(message.message_id)),
        ("Date", formatdate(localtime=False, usegmt=True)),
    ]
    for name, value in core:
        check_header(name, value)
    for name, value in message.headers.items():
        check_header(name, value)
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} must be set through the Message fields")
    return [*core, *message.headers.items()]


def build_mime(message: Message) -> MIMEMessage:
    """A multipart/alternative email (text, then HTML; utf-8) with ``message``'s headers.

    Raises ``ValueError`` naming the header when any header name or value would allow
    header injection, or when ``message.headers`` sets a header built from the fields.
    """
    # The compat32 MIME classes build a message several times faster than EmailMessage's
    # header registry; the SMTP policy still gives CRLF line endings on output.
    mime = MIMEMultipart("alternative", policy=email.policy.compat32.clone(linesep="\r\n"))
    for name, value in checked_headers(message):
        mime[name] = _header(name, value)
    # MIMEText hands its charset to set_payload, which takes a Charset (typeshed says str).
    mime.attach(MIMEText(message.text, "plain", _UTF8_QP))  # type: ignore[arg-type]
    mime.attach(MIMEText(message.html, "html", _UTF8_QP))  # type: ignore[arg-type]
    return mime


def _header(name: str, value: str) -> str:
    """ASCII values as they are; anything else RFC 2047 encoded (addresses kept readable).

    A non-ASCII address (RFC 6531) cannot be RFC 2047 encoded: it stays raw UTF-8, held as
    surrogate escapes that ``mime_bytes`` writes back as the original bytes.
    """
    if value.isascii():
        return value
    if name.lower() in _ADDRESS_HEADERS:
        display, address = parseaddr(value)
        address = ascii_domain(address)
        if address.isascii():
            return formataddr((display, address), charset="utf-8")
        raw = address.encode("utf-8").decode("ascii", "surrogateescape")
        return f"{Header(display, 'utf-8').encode()} <{raw}>" if display else raw
    return Header(value, "utf-8").encode()


def ascii_domain(address: str) -> str:
    """``address`` with an internationalized domain in its ASCII (IDNA) form.

    A non-ASCII local part stays as it is: only SMTPUTF8 (RFC 6531) can carry it.
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def envelope_address(value: str) -> str:
    """The bare address of a header value, its domain in IDNA form (for MAIL and RCPT)."""
    return ascii_domain(parseaddr(value)[1])


def mime_bytes(mime: MIMEMessage) -> bytes:
    """The message as bytes with CRLF line ends; UTF-8 addresses written as raw UTF-8.

    Bodies are quoted-printable and other headers RFC 2047, so only an RFC 6531 address
    (sent with SMTPUTF8) puts 8-bit bytes on the wire.
    """
    buffer = io.BytesIO()
    policy = email.policy.compat32.clone(linesep="\r\n", cte_type="8bit")
    BytesGenerator(buffer, policy=policy).flatten(mime)
    return buffer.getvalue()


# RFC 5322 caps a line at 998 characters; longer (or non-ASCII) headers take the slow path.
_MAX_HEADER_LINE = 998


def message_bytes(message: Message) -> bytes:
    """``mime_bytes(build_mime(message))``, written directly when every header is plain.

    The same email (multipart/alternative, text then HTML, utf-8, quoted-printable) for
    a fraction of the cost: the quoted-printable encoding is ``binascii``'s (C), and
    ASCII headers that fit on a line are written as they are. Anything else (RFC 2047
    words, UTF-8 addresses) goes through ``build_mime``. Raises ``ValueError`` as it does.
    """
    headers = checked_headers(message)
    if not all(v.isascii() and len(n) + len(v) + 2 <= _MAX_HEADER_LINE for n, v in headers):
        return mime_bytes(build_mime(message))
    # Quoted-printable never contains "=_", so this boundary cannot occur in a body.
    boundary = f"=_tm_{secrets.token_hex(12)}"
    lines = [
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "MIME-Version: 1.0",
        *(f"{name}: {value}" for name, value in headers),
        "",
    ]
    head = "\r\n".join(lines).encode("ascii")
    parts = [head]
    for subtype, body in (("plain", message.text), ("html", message.html)):
        parts.append(
            f'\r\n--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n".encode(
                "ascii"
            )
        )
        parts.append(_quoted_printable(body))
    parts.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts)


def _quoted_printable(text: str) -> bytes:
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = b"\n" + binascii.b2a_qp(data, istext=True)
    # "From " opening a line is encoded, so no mbox on the way can mangle it into ">From ".
    return encoded.replace(b"\nFrom ", b"\n=46rom ")[1:].replace(b"\n", b"\r\n")
