"""What the HTTP provider backends share: options, secrets, retries and outcomes.

``HTTPBackend`` is a template method. A provider subclass says how a batch becomes one
``httpx.Request`` (``build_request``) and how a 2xx answer becomes results
(``read_results``); the base sends it and decides what every other answer means:

- the connection could not be made: nothing left, a temporary failure (resent later);
- 429: wait as long as ``Retry-After`` (or the provider's rate-limit reset) says, retry;
- a timeout, a dropped connection or a 5xx once the request went out: the provider may
  have the message, so ``unknown`` (never resent blindly), unless the backend sends an
  idempotency key, in which case the same request is retried and deduplicated upstream;
- any other 4xx: permanent for every message of the request.

The transport, the sleep and the clock are injectable, so tests use
``httpx.MockTransport`` and check every wait without waiting.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr

from engine.errors import ConfigError
from engine.mime import RESERVED_HEADERS, check_header
from engine.types import DeliveryBackend, Message, SendResult, SendStatus
from plugins.delivery.options import BackendOptions, parse_options

if TYPE_CHECKING:
    import httpx

    from engine.app import Engine

# The longest back-off between idempotent retries, and before a 429 without a hint.
_MAX_BACKOFF = 30.0


class HTTPOptions(BackendOptions):
    """Options every HTTP backend takes (``[delivery.<backend>]``)."""

    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    max_attempts: int = Field(default=5, ge=1, le=20, description="tries per request")
    max_wait: float = Field(
        default=120.0, ge=0, description="longest wait for a rate limit before deferring"
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="requests in flight at once")


@dataclass
class Outgoing:
    """One message of a request, with the payload built for it."""

    message: Message
    payload: Any


def secret_from(backend: str, option: str, variable: str) -> SecretStr:
    """The secret in environment variable ``variable``; unset or empty names the option."""
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(
            f"delivery.{backend}.{option}: environment variable {variable!r} is not set"
        )
    return SecretStr(value)


def idempotency_key(messages: Sequence[Message]) -> str:
    """A key that names exactly these sends, so every retry of the request repeats it."""
    digest = hashlib.sha256()
    for message in messages:
        digest.update(f"{message.send_id}:{message.message_id}\n".encode())
    return f"tailormail-{digest.hexdigest()[:40]}"


def checked_headers(message: Message) -> dict[str, str]:
    """The message's extra headers; ``ValueError`` naming any that could inject headers.

    The same checks ``build_mime`` makes, for providers that take fields, not MIME.
    """
    for name, value in (
        ("From", message.from_address),
        ("To", message.to_address),
        ("Subject", message.subject),
    ):
        check_header(name, value)
    for name, value in message.headers.items():
        check_header(name, value)
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} must be set through the Message fields")
    return dict(message.headers)


def results_for(outgoing: Sequence[Outgoing], status: SendStatus, error: str) -> list[SendResult]:
    """The same outcome for every message of a request."""
    return [SendResult(item.message.send_id, status, error=error) for item in outgoing]


def sent_with_id(
    outgoing: Sequence[Outgoing], response: httpx.Response, key: str
) -> list[SendResult]:
    """One message sent, its provider id read from the JSON answer's ``key``.

    An answer without the id is ``unknown``: the provider took the request, but we cannot
    tell what it did with it.
    """
    (item,) = outgoing
    try:
        provider_id = response.json()[key]
    except (ValueError, KeyError, TypeError):
        return results_for(outgoing, SendStatus.UNKNOWN, f"unexpected answer {response.text!r}")
    return [SendResult(item.message.send_id, SendStatus.SENT, provider_id=str(provider_id))]


def _seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` value (delta seconds or an HTTP date) as seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def _reset_seconds(headers: httpx.Headers, now: float) -> float | None:
    """Seconds until a provider's rate-limit window resets, from its headers.

    ``X-RateLimit-Reset`` is a Unix time at SendGrid and Mailgun, a delta in the IETF
    draft's ``RateLimit-Reset``: a value past 10**9 is read as a Unix time.
    """
    for name in ("X-RateLimit-Reset", "RateLimit-Reset"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        return max(0.0, value - now) if value > 1e9 else max(0.0, value)
    return None


def _exhausted(headers: httpx.Headers) -> bool:
    for name in ("X-RateLimit-Remaining", "RateLimit-Remaining"):
        raw = headers.get(name)
        if raw is not None and raw.strip() == "0":
            return True
    return False


class HTTPBackend(DeliveryBackend):
    """Base of the provider backends; see the module docstring for what each answer means.

    Subclasses set ``name``, ``Options``, ``batch_limit`` (messages per request, 1 when
    the provider has no batch endpoint), ``idempotent`` (whether requests carry an
    idempotency key), and implement ``payload``, ``build_request`` and ``read_results``.
    """

    name = "http"
    Options: ClassVar[type[HTTPOptions]] = HTTPOptions
    idempotent = False  # requests carry an idempotency key, so retries are safe

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        # lazy: httpx (~0.1 s) only when a request is sent; a plugin module loads light
        import httpx

        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise ConfigError(f"delivery.{self.name}: unknown option 'transport'")
        self.engine = engine
        self.options = parse_options(self.name, self.Options, options)
        self.transport, self.sleep, self.clock = transport, sleep, clock
        self.client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._not_before = 0.0  # the provider said: no request before this time

    def reaches_other_machines(self) -> bool:
        """Always: a provider's API delivers to real recipients."""
        return True

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Validate a ``[delivery.<name>]`` table without building the backend."""
        parse_options(cls.name, cls.Options, options)

    # -- what a provider implements ---------------------------------------------------
    @property
    def batch_limit(self) -> int:
        """Messages per request (the provider's batch endpoint), 1 without one."""
        return 1

    def payload(self, message: Message) -> Any:
        """The provider's form of one message; ``ValueError`` fails only that message."""
        raise NotImplementedError

    def build_request(self, client: httpx.Client, outgoing: Sequence[Outgoing]) -> httpx.Request:
        """The request that sends ``outgoing``; built again (re-signed) for every attempt."""
        raise NotImplementedError

    def read_results(
        self, outgoing: Sequence[Outgoing], response: httpx.Response
    ) -> list[SendResult]:
        """Results, in order, from a 2xx answer."""
        raise NotImplementedError

    def refused(self, outgoing: Sequence[Outgoing], response: httpx.Response) -> list[SendResult]:
        """Results from a 4xx answer (other than 429): permanent for every message.

        Except 401 and 403: the provider refused our credentials, not the messages, so
        they stay deferred and go out once the key is fixed.
        """
        if response.status_code in (401, 403):
            error = f"credentials refused, check delivery.{self.name}: {describe(response)}"
            return results_for(outgoing, SendStatus.TEMPORARY_FAILURE, error)
        return results_for(outgoing, SendStatus.PERMANENT_FAILURE, describe(response))

    # -- life cycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Open the HTTP client (one connection pool for the backend's life)."""
        # lazy: httpx (~0.1 s) only when a request is sent; a plugin module loads light
        import httpx

        if self.client is None:
            self.client = httpx.Client(
                transport=self.transport,
                timeout=self.options.timeout,
                limits=httpx.Limits(max_connections=self.options.concurrency),
            )

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send every message, ``batch_limit`` per request, ``concurrency`` requests at once."""
        was_open = self.client is not None
        self.open()
        try:
            return self._send_all(messages)
        finally:
            if not was_open:
                self.close()

    def _send_all(self, messages: Sequence[Message]) -> list[SendResult]:
        results: dict[int, SendResult] = {}
        ready: list[Outgoing] = []
        for message in messages:
            try:
                ready.append(Outgoing(message, self.payload(message)))
            except ValueError as exc:
                results[message.send_id] = SendResult(
                    message.send_id, SendStatus.PERMANENT_FAILURE, error=str(exc)
                )
        requests = list(_chunks(ready, self.batch_limit))
        if self.options.concurrency == 1 or len(requests) <= 1:
            answers = [self._deliver(chunk) for chunk in requests]
        else:
            with ThreadPoolExecutor(min(self.options.concurrency, len(requests))) as pool:
                answers = list(pool.map(self._deliver, requests))
        for answer in answers:
            results.update((result.send_id, result) for result in answer)
        return [results[message.send_id] for message in messages]

    # -- one request, with its retries --------------------------------------------------
    def _deliver(self, outgoing: list[Outgoing]) -> list[SendResult]:
        # lazy: httpx (~0.1 s) only when a request is sent; a plugin module loads light
        import httpx

        assert self.client is not None
        for attempt in range(1, self.options.max_attempts + 1):
            last = attempt == self.options.max_attempts
            self._respect_rate_limit()
            request = self.build_request(self.client, outgoing)
            try:
                response = self.client.send(request)
                response.read()
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # No connection, so no request: the provider cannot have the message.
                return results_for(outgoing, SendStatus.TEMPORARY_FAILURE, f"{exc!r}")
            except httpx.TransportError as exc:
                if self.idempotent and not last:
                    self.sleep(_backoff(attempt))
                    continue
                return results_for(outgoing, SendStatus.UNKNOWN, f"no answer: {exc!r}")
            self._note_rate_limit(response)
            status = response.status_code
            if status == 429:
                wait = self._retry_after(response, attempt)
                if last or wait > self.options.max_wait:
                    return results_for(outgoing, SendStatus.TEMPORARY_FAILURE, describe(response))
                self.sleep(wait)
                continue
            if status >= 500:
                if self.idempotent and not last:
                    self.sleep(_backoff(attempt))
                    continue
                return results_for(outgoing, SendStatus.UNKNOWN, describe(response))
            if status >= 400:
                return self.refused(outgoing, response)
            if status >= 300:
                return results_for(outgoing, SendStatus.UNKNOWN, describe(response))
            return self.read_results(outgoing, response)
        raise AssertionError("unreachable: the last attempt always returns")

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        now = self.clock()
        hinted = _seconds(response.headers.get("Retry-After"), now)
        if hinted is None:
            hinted = _reset_seconds(response.headers, now)
        return _backoff(attempt) if hinted is None else hinted

    def _note_rate_limit(self, response: httpx.Response) -> None:
        # "Remaining: 0" means the next request would get a 429: wait for the reset instead.
        if response.status_code != 429 and _exhausted(response.headers):
            wait = _reset_seconds(response.headers, self.clock())
            if wait:
                with self._lock:
                    self._not_before = max(self._not_before, self.clock() + wait)

    def _respect_rate_limit(self) -> None:
        with self._lock:
            wait = self._not_before - self.clock()
        if wait > 0:
            self.sleep(min(wait, self.options.max_wait))


def _backoff(attempt: int) -> float:
    return float(min(_MAX_BACKOFF, 2 ** (attempt - 1)))


def _chunks(items: list[Outgoing], size: int) -> Iterator[list[Outgoing]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def describe(response: httpx.Response) -> str:
    """``"<status> <reason>: <body>"``, the body cut short, for a ledger row's error."""
    text = response.text.strip().replace("\n", " ")
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{response.status_code} {response.reason_phrase}: {text}".rstrip(": ")
