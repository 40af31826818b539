"""The ``smtp`` backend: a pool of SMTP connections sending a batch in parallel.

Each connection of the pool (``pool_size``) is opened on first use and kept for the
batches that follow, inside one ``with`` block. A 4xx answer (or a link lost before the
body left) is retried with jittered exponential backoff; after ``retries`` it is a
temporary failure, which the run retries later. A 5xx is permanent; a 5xx refusing the
recipient's address itself marks the result ``rejected`` (a hard bounce: the address
is suppressed). A link lost after the body left is ``unknown``, never retried blindly.
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from engine import hookimpl
from engine.errors import ConfigError
from engine.mime import envelope_address, format_message_id, message_bytes
from engine.realmail import is_this_machine
from engine.types import DeliveryBackend, Message, SendResult, SendStatus
from plugins.delivery.dkim import DKIMOptions, DKIMSigner
from plugins.delivery.options import BackendOptions, parse_options
from plugins.delivery.ratelimit import RateLimit
from plugins.delivery.smtp_connection import (
    CONNECT,
    LOST,
    MAIL,
    RCPT,
    Endpoint,
    Refusal,
    SMTPConnection,
)

if TYPE_CHECKING:
    from engine.app import Engine


class SMTPOptions(BackendOptions):
    """``[delivery.smtp]``: every option, typed; a bad one stops the engine naming it."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    username: str | None = None
    password_env: str | None = None
    starttls: bool = False
    ssl: bool = False  # implicit TLS (port 465)
    ca_file: str | None = None  # trust this CA bundle (a private CA) instead of the system's
    local_hostname: str | None = None  # the EHLO name (default: this machine's FQDN)
    timeout: float = Field(default=30.0, gt=0)
    pool_size: int = Field(default=4, ge=1, le=64)
    retries: int = Field(default=3, ge=0, le=20)  # further attempts after a 4xx answer
    backoff: float = Field(default=1.0, ge=0)  # seconds before the first retry, then doubling
    backoff_max: float = Field(default=30.0, ge=0)
    rate_limit: float | None = Field(default=None, gt=0)  # messages per second, whole pool
    dkim: DKIMOptions | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SMTPOptions:
        if self.starttls and self.ssl:
            raise ValueError("'starttls' and 'ssl' are mutually exclusive")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("'username' and 'password_env' go together")
        return self

    @property
    def tls(self) -> Literal["none", "starttls", "ssl"]:
        """The TLS mode: none, STARTTLS upgrade, or implicit TLS."""
        return "ssl" if self.ssl else "starttls" if self.starttls else "none"


def is_hard_bounce(refusal: Refusal) -> bool:
    """A 5xx refusal of the recipient's address itself (user unknown, mailbox disabled).

    A policy refusal (5.7.x: relaying, authentication, reputation) or a full mailbox
    (5.2.2) says nothing lasting about the address, so it suppresses nothing.
    """
    if refusal.stage != RCPT or not 500 <= refusal.code < 600:
        return False
    status = refusal.text.split(" ", 1)[0]
    return status[:2] != "5." or status.startswith(("5.1.", "5.2.1"))


class SMTPBackend(DeliveryBackend):
    """Sends through ``host:port`` over up to ``pool_size`` connections in parallel.

    The password comes from the environment variable ``password_env``. A server that cannot
    be reached is a temporary failure per message, never an exception.
    """

    name = "smtp"
    reports_handover = True  # each message, right before its SMTP transaction

    sleep: Callable[[float], None] = staticmethod(time.sleep)
    """How the backend waits between retries (tests replace it to record the waits)."""

    def __init__(self, engine: Engine | None = None, **options: Any) -> None:
        self.options = o = parse_options("smtp", SMTPOptions, options)
        if o.password_env is not None and o.password_env not in os.environ:
            # Fail at start-up, not at the first send of a scheduled run.
            raise ConfigError(
                f"delivery.smtp: environment variable {o.password_env!r} (password_env) is not set"
            )
        self.engine = engine
        base = engine.settings.project_dir if engine is not None else None
        self.signer = DKIMSigner(o.dkim, base, where="delivery.smtp.dkim") if o.dkim else None
        # Verify the server's certificate; smtplib's own default context does not.
        ca_file = str(base / o.ca_file) if base is not None and o.ca_file else o.ca_file
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"delivery.smtp.ca_file: cannot load {ca_file}: {exc}") from None
        self.endpoint = Endpoint(
            o.host,
            o.port,
            o.timeout,
            o.tls,
            context,
            o.username,
            os.environ[o.password_env] if o.password_env else None,
            o.local_hostname,
        )
        self.pool = [SMTPConnection(self.endpoint) for _ in range(o.pool_size)]
        self.rate = RateLimit(o.rate_limit, burst=o.pool_size) if o.rate_limit else None
        self._threads: ThreadPoolExecutor | None = None
        self._open = False  # inside a ``with`` block: connections outlive each batch
        self._down: Refusal | None = None  # set when the server cannot be reached

    def reaches_other_machines(self) -> bool:
        """True unless ``host`` is this machine (localhost, a loopback address)."""
        return not is_this_machine(self.options.host)

    # -- life cycle -----------------------------------------------------------------------
    def open(self) -> None:
        """Start the pool's threads; connections open on first use."""
        self._open = True
        if self._threads is None and len(self.pool) > 1:
            self._threads = ThreadPoolExecutor(len(self.pool), thread_name_prefix="smtp")

    def close(self) -> None:
        """QUIT every open connection and stop the threads."""
        self._open = False
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=True)
        for connection in self.pool:
            connection.close()

    @property
    def connections_opened(self) -> int:
        """How many connections the pool has opened so far (reuse keeps this low)."""
        return sum(connection.opened for connection in self.pool)

    # -- sending --------------------------------------------------------------------------
    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send every message, in parallel over the pool; one result per message, in order.

        Outside a ``with`` block the pool is opened for this batch only.
        """
        was_open = self._open
        self._down = None  # one unreachable server fails the rest fast, per batch
        results: list[SendResult | None] = [None] * len(messages)
        pending = deque(enumerate(messages))

        def work(connection: SMTPConnection) -> None:
            while True:
                try:
                    index, message = pending.popleft()  # atomic: each message taken once
                except IndexError:
                    return
                results[index] = self.handed(self._send_one(connection, message))

        try:
            self.open()
            slots = self.pool[: max(1, min(len(self.pool), len(messages)))]
            if self._threads is None or len(slots) == 1:
                work(slots[0])
            else:
                for future in [self._threads.submit(work, slot) for slot in slots]:
                    future.result()
        finally:
            if not was_open:
                self.close()
        return [result for result in results if result is not None]

    def _send_one(self, connection: SMTPConnection, message: Message) -> SendResult:
        try:
            data = message_bytes(message)
            if self.signer is not None:
                data = self.signer.sign(data)
        except ValueError as exc:
            return SendResult(message.send_id, SendStatus.PERMANENT_FAILURE, error=str(exc))
        message_id = format_message_id(message.message_id)
        sender = envelope_address(message.from_address)
        recipient = envelope_address(message.to_address)
        attempt = 0
        while True:
            refusal = self._attempt(connection, message, sender, recipient, data)
            if refusal is None:
                return SendResult(message.send_id, SendStatus.SENT, provider_id=message_id)
            if attempt >= self.options.retries or not self._retryable(refusal):
                if refusal.stage == CONNECT:  # no session to be had: fail the rest fast
                    self._down = refusal
                return self._result(message, refusal)
            attempt += 1
            self.sleep(self._backoff(attempt))

    def _attempt(
        self,
        connection: SMTPConnection,
        message: Message,
        sender: str,
        recipient: str,
        data: bytes,
    ) -> Refusal | None:
        if self._down is not None:
            return self._down
        refusal = connection.connect()
        if refusal is not None:
            return refusal
        options: list[str] = []
        if not (sender.isascii() and recipient.isascii()):
            if not connection.supports("smtputf8"):
                address = sender if not sender.isascii() else recipient
                text = f"{self.endpoint.host} does not offer SMTPUTF8, needed for {address}"
                return Refusal(0, text, MAIL)
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        if self.rate is not None:
            self.rate.acquire()
        self.handing_over(message)  # with the transport from here until its answer
        return connection.deliver(sender, recipient, data, options)

    @staticmethod
    def _retryable(refusal: Refusal) -> bool:
        if refusal.stage == LOST:
            return not refusal.body_sent  # it may have been accepted: never resend blindly
        if refusal.stage == CONNECT and refusal.code == 0:
            return False  # unreachable: the run retries it later, the batch fails fast
        return 400 <= refusal.code < 500

    def _backoff(self, attempt: int) -> float:
        """Exponential in the attempt, jittered to [50%, 100%] so retries spread out."""
        ceiling = min(self.options.backoff_max, self.options.backoff * 2.0 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret

    @staticmethod
    def _result(message: Message, refusal: Refusal) -> SendResult:
        if refusal.stage == LOST and refusal.body_sent:
            status = SendStatus.UNKNOWN
        elif refusal.stage == CONNECT:
            # No session (unreachable, TLS, a refused login): nothing about this message was
            # refused, so it waits for the next try rather than failing for good.
            status = SendStatus.TEMPORARY_FAILURE
        elif 500 <= refusal.code < 600 or refusal.code == 0:
            status = SendStatus.PERMANENT_FAILURE
        else:
            status = SendStatus.TEMPORARY_FAILURE
        return SendResult(
            message.send_id, status, error=str(refusal), rejected=is_hard_bounce(refusal)
        )


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``smtp`` backend."""
    register("smtp", SMTPBackend)
