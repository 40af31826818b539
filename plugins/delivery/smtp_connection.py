"""One SMTP connection of the ``smtp`` backend's pool: connect, one transaction, reset.

A transaction is MAIL, RCPT, DATA for one message and one recipient. Whatever the server
refuses, the connection is left clean for the next message: RSET after a refusal, or a
dropped connection after 421 (the server is closing it) or a lost link.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CONNECT, MAIL, RCPT, DATA, LOST = "connect", "MAIL", "RCPT", "DATA", "lost"
"""The stage a transaction stopped at."""


@dataclass(frozen=True)
class Refusal:
    """Why a transaction did not deliver: the reply (code 0 when none) and its stage.

    ``body_sent`` is true when the link was lost after the message body went out: the
    server may have accepted it, so the send is ambiguous.
    """

    code: int
    text: str
    stage: str
    body_sent: bool = False

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code else self.text


class _TrackedSMTP(smtplib.SMTP):
    """smtplib.SMTP that remembers whether the message body has gone out."""

    body_sent = False

    def send(self, s: ReadableBuffer | str) -> None:
        super().send(s)
        # smtplib sends commands as str and only the DATA payload as bytes.
        if isinstance(s, bytes):
            self.body_sent = True


class _TrackedSMTPSSL(_TrackedSMTP, smtplib.SMTP_SSL):
    """The implicit-TLS variant of ``_TrackedSMTP``."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: address, TLS mode, credentials, EHLO name."""

    host: str
    port: int
    timeout: float
    tls: str  # "none", "starttls" or "ssl" (implicit TLS)
    context: ssl.SSLContext
    username: str | None = None
    password: str | None = None
    local_hostname: str | None = None


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class SMTPConnection:
    """One pooled connection, opened on first use and reopened after a drop."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.smtp: _TrackedSMTP | None = None
        self.opened = 0  # how many times this slot connected (tests count reuse)

    def connect(self) -> Refusal | None:
        """Connect, upgrade to TLS and log in unless connected; a ``Refusal`` on failure."""
        if self.smtp is not None:
            return None
        e = self.endpoint
        try:
            if e.tls == "ssl":
                smtp: _TrackedSMTP = _TrackedSMTPSSL(
                    e.host, e.port, e.local_hostname, timeout=e.timeout, context=e.context
                )
            else:
                smtp = _TrackedSMTP(e.host, e.port, e.local_hostname, timeout=e.timeout)
        except smtplib.SMTPResponseException as exc:  # the greeting was not 220
            return Refusal(exc.smtp_code, _text(exc.smtp_error), CONNECT)
        except (OSError, smtplib.SMTPException) as exc:
            return Refusal(0, f"cannot connect to {e.host}:{e.port}: {exc}", CONNECT)
        try:
            if e.tls == "starttls":
                smtp.starttls(context=e.context)
            if e.username is not None and e.password is not None:
                smtp.login(e.username, e.password)
        except smtplib.SMTPResponseException as exc:
            smtp.close()
            return Refusal(exc.smtp_code, _text(exc.smtp_error), CONNECT)
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            return Refusal(0, f"cannot set up the session with {e.host}:{e.port}: {exc}", CONNECT)
        self.smtp = smtp
        self.opened += 1
        return None

    def supports(self, extension: str) -> bool:
        """Whether the connected server announced ``extension`` in its EHLO answer."""
        if self.smtp is None:
            return False
        self.smtp.ehlo_or_helo_if_needed()
        return self.smtp.has_extn(extension)

    def deliver(
        self, sender: str, recipient: str, data: bytes, options: list[str]
    ) -> Refusal | None:
        """One transaction on the open connection; None when the server accepted it."""
        smtp = self.smtp
        if smtp is None:
            return Refusal(0, "not connected", LOST)
        smtp.body_sent = False
        stage = MAIL
        reply: bytes | str
        try:
            smtp.ehlo_or_helo_if_needed()
            if smtp.does_esmtp and smtp.has_extn("size"):
                options = [*options, f"SIZE={len(data)}"]
            code, reply = smtp.mail(sender, options)
            if code == 250:
                stage = RCPT
                code, reply = smtp.rcpt(recipient)
            if code in (250, 251):
                stage = DATA
                code, reply = smtp.data(data)
                if code == 250:
                    return None
        except smtplib.SMTPResponseException as exc:  # DATA answered other than 354
            code, reply = exc.smtp_code, exc.smtp_error
        except (OSError, smtplib.SMTPException) as exc:
            self.drop()
            return Refusal(0, f"connection lost: {exc!r}", LOST, body_sent=smtp.body_sent)
        refusal = Refusal(code, _text(reply), stage)
        self._reset(code)
        return refusal

    def _reset(self, code: int) -> None:
        """RSET so the next message starts a clean transaction; drop the link after 421."""
        if code == 421 or self.smtp is None:  # the server is closing this connection
            self.drop()
            return
        try:
            if self.smtp.rset()[0] == 250:
                return
        except (OSError, smtplib.SMTPException):
            pass
        self.drop()

    def drop(self) -> None:
        """Close without a word (after a failure)."""
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()

    def close(self) -> None:
        """Say QUIT politely, then close whatever the server answers."""
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
