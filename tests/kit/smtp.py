"""Test helpers for the SMTP backend: an aiosmtpd mailbox, messages (made and parsed), a
throwaway CA."""

from __future__ import annotations

import datetime as dt
import email.policy
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.types import Message

UNSUBSCRIBE = "<https://t.example/u/tok123>, <mailto:unsubscribe@example.org?subject=tok123>"


def make_message(send_id: int = 1, to: str = "ann@example.org", **changes: Any) -> Message:
    """A rendered message as the pipeline hands it to a backend."""
    fields: dict[str, Any] = {
        "send_id": send_id,
        "message_id": f"{send_id}.run7@tailormail.example",
        "from_address": "Alerts <alerts@example.org>",
        "to_address": to,
        "subject": "Zoë, 3 new listings for you",
        "html": "<p>Bonjour <b>Zoë</b></p>",
        "text": "Bonjour Zoë",
        "headers": {
            "List-Unsubscribe": UNSUBSCRIBE,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Tailormail-Send-Id": str(send_id),
        },
    }
    fields.update(changes)
    return Message(**fields)


def parse(data: bytes) -> EmailMessage:
    """A message's bytes parsed back, as a mail client reads them."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


def free_port() -> int:
    """A TCP port nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mailbox:
    """An aiosmtpd handler: collects what it accepts, refuses some recipients.

    ``refuse`` maps an address to the reply for its RCPT; ``refuse_once`` to a reply given
    only the first time that address is tried. Counts RSET and EHLO commands; without
    ``smtputf8`` the server does not announce SMTPUTF8.
    """

    def __init__(
        self,
        refuse: dict[str, str] | None = None,
        refuse_once: dict[str, str] | None = None,
        *,
        smtputf8: bool = True,
    ) -> None:
        self.smtputf8 = smtputf8
        self.refuse = refuse or {}
        self.refuse_once = dict(refuse_once or {})
        self.received: list[tuple[Any, Envelope]] = []
        self.rcpt_attempts: list[str] = []
        self.resets = 0
        self.ehlos = 0
        self.tls_sessions = 0

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        self.ehlos += 1
        session.host_name = hostname
        if not self.smtputf8:  # a server that does not announce RFC 6531 support
            return [line for line in responses if "SMTPUTF8" not in line]
        return responses

    async def handle_RSET(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.resets += 1
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.rcpt_attempts.append(address)
        if address in self.refuse_once:
            return self.refuse_once.pop(address)
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        # STARTTLS sets session.ssl; an implicit-TLS transport says so itself.
        if session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None:
            self.tls_sessions += 1
        self.received.append((session.peer, envelope))
        return "250 Message accepted for delivery"


@contextmanager
def serve(handler: object, **kwargs: Any) -> Iterator[int]:
    """Run ``handler`` on an aiosmtpd server on loopback; yields its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def make_certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (its PEM file) and a server TLS context for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tailormail test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context
