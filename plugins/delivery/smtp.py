"""The ``smtp`` backend: delivers through an SMTP server, one connection per batch."""

from __future__ import annotations

import os
import smtplib
import ssl as tls
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from engine import hookimpl
from engine.errors import ConfigError
from engine.types import DeliveryBackend, Message, SendResult, SendStatus
from plugins.delivery.mime import build_mime

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from engine.app import Engine


class _TrackedSMTP(smtplib.SMTP):
    """smtplib.SMTP that remembers whether the message body has gone out.

    A connection lost before the body was sent means the server cannot have accepted the
    message (retry is safe); lost after it, the server may have (the send is ambiguous).
    """

    body_sent = False

    def send(self, s: ReadableBuffer | str) -> None:
        super().send(s)
        # smtplib sends commands as str and only the DATA payload as bytes.
        if isinstance(s, bytes):
            self.body_sent = True


class _TrackedSMTPSSL(_TrackedSMTP, smtplib.SMTP_SSL):
    """The implicit-TLS variant of ``_TrackedSMTP``."""


def _status(code: int) -> SendStatus:
    # RFC 5321: 4xx is transient, 5xx permanent.
    return SendStatus.PERMANENT_FAILURE if code >= 500 else SendStatus.TEMPORARY_FAILURE


class SMTPBackend(DeliveryBackend):
    """Sends through ``host:port``; the password comes from the env var ``password_env``.

    ``open()`` connects (STARTTLS or implicit TLS, then login), ``send`` reuses the
    connection for the whole batch and reconnects after a drop, ``close()`` quits. A server
    that cannot be reached is a temporary failure per message, never an exception.
    """

    name = "smtp"
    reports_handover = True

    def __init__(
        self,
        engine: Engine | None = None,
        host: str = "127.0.0.1",
        port: int = 25,
        username: str | None = None,
        password_env: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        timeout: float = 30.0,
        **unknown: Any,
    ):
        if unknown:
            names = ", ".join(repr(key) for key in sorted(unknown))
            raise ConfigError(f"delivery.smtp: unknown option {names}")
        if starttls and ssl:
            raise ConfigError("delivery.smtp: 'starttls' and 'ssl' are mutually exclusive")
        if (username is None) != (password_env is None):
            raise ConfigError("delivery.smtp: 'username' and 'password_env' go together")
        if password_env is not None and password_env not in os.environ:
            # Fail at start-up, not at the first send of a scheduled run.
            raise ConfigError(
                f"delivery.smtp: environment variable {password_env!r} (password_env) is not set"
            )
        self.engine = engine
        self.host, self.port, self.timeout = host, port, timeout
        self.username, self.password_env = username, password_env
        self.starttls, self.ssl = starttls, ssl
        self.connection: _TrackedSMTP | None = None
        self._connect_error: str | None = None

    def open(self) -> None:
        """Connect now; if the server is unreachable, ``send`` reports it per message."""
        try:
            self._connect()
        except (OSError, smtplib.SMTPException):
            self.connection = None

    def close(self) -> None:
        """Say QUIT politely, then drop the connection whatever the server answers."""
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            connection.close()

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send each message; outside a ``with`` block, connect for this batch only."""
        was_open = self.connection is not None
        # One failed connect fails the rest of the batch: no reconnect storm (or a timeout
        # per message) against a server that is down.
        self._connect_error = None
        try:
            return self.send_each(messages, self._send_one)
        finally:
            if not was_open:
                self.close()

    def _connect(self) -> _TrackedSMTP:
        # Verify the server's certificate; smtplib's own default context does not.
        context = tls.create_default_context()
        connection = (
            _TrackedSMTPSSL(self.host, self.port, timeout=self.timeout, context=context)
            if self.ssl
            else _TrackedSMTP(self.host, self.port, timeout=self.timeout)
        )
        try:
            if self.starttls:
                connection.starttls(context=context)
            if self.username is not None and self.password_env is not None:
                connection.login(self.username, os.environ[self.password_env])
        except BaseException:
            connection.close()
            raise
        self.connection = connection
        return connection

    def _send_one(self, message: Message) -> SendResult:
        try:
            mime = build_mime(message)
        except ValueError as exc:
            return SendResult(message.send_id, SendStatus.PERMANENT_FAILURE, error=str(exc))
        message_id = str(mime["Message-ID"])
        if self._connect_error is not None:
            return self._failed(message, SendStatus.TEMPORARY_FAILURE, self._connect_error)
        try:
            connection = self.connection or self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            self._connect_error = f"cannot connect to {self.host}:{self.port}: {exc}"
            return self._failed(message, SendStatus.TEMPORARY_FAILURE, self._connect_error)
        connection.body_sent = False
        sender, recipient = parseaddr(message.from_address)[1], parseaddr(message.to_address)[1]
        try:
            connection.send_message(mime, sender, [recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(recipient, (550, b"recipient refused"))
            return self._refused(message, code, reply)
        except smtplib.SMTPResponseException as exc:
            return self._refused(message, exc.smtp_code, exc.smtp_error)
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            status = SendStatus.UNKNOWN if connection.body_sent else SendStatus.TEMPORARY_FAILURE
            return self._failed(message, status, f"connection lost: {exc!r}")
        return SendResult(message.send_id, SendStatus.SENT, provider_id=message_id)

    def _drop(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def _refused(self, message: Message, code: int, reply: bytes | str) -> SendResult:
        if code == 421:  # the server is closing this connection: reconnect for the next one
            self._drop()
        return self._failed(message, _status(code), _reply(code, reply))

    @staticmethod
    def _failed(message: Message, status: SendStatus, error: str) -> SendResult:
        return SendResult(message.send_id, status, error=error)


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return f"{code} {text}"


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``smtp`` backend."""
    register("smtp", SMTPBackend)
