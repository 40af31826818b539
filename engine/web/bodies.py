"""Reading a request body under bounds: its size, its time, and the bytes all bodies hold.

A body whose ``Content-Length`` is over the cap is refused before a byte is read (413);
one that grows past the cap while streaming is refused as it does (413). The whole body
must arrive within the read deadline (408). All the bodies being read at once hold at most
a fixed number of bytes (503, ``Retry-After``: a provider retries); a declared length is
reserved up front, so 60 clients announcing 5 MiB each are refused at once, not after
sending 300 MiB. A client that leaves mid-upload costs one log line, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import ClientDisconnect, Request

log = logging.getLogger(__name__)


class BodyRefused(Exception):
    """The body is not read: ``status`` and ``message`` are the answer (the connection is
    closed after it, since the rest of the body may still be on its way)."""

    def __init__(self, status: int, message: str) -> None:
        """Refuse with ``status`` and a one-line ``message``."""
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Connection: close (and Retry-After for a 503)."""
        headers = {"Connection": "close", "Cache-Control": "no-store"}
        if self.status == 503:
            headers["Retry-After"] = "5"
        return headers


class BodyBudget:
    """The bytes of request bodies held in memory by one process at once."""

    def __init__(self, limit: int) -> None:
        """At most ``limit`` bytes held at once."""
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) when that would pass the limit."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def give(self, size: int) -> None:
        """Return ``size`` reserved bytes."""
        with self._lock:
            self.held -= size


def declared_length(request: Request) -> int | None:
    """The request's ``Content-Length`` (None when absent); a bad one is a 400."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isascii() or not value.strip().isdigit():
        raise BodyRefused(400, "Content-Length is not a number")
    return int(value)


@asynccontextmanager
async def bounded_body(
    request: Request, what: str, *, limit: int, timeout: float, budget: BodyBudget
) -> AsyncIterator[bytes]:
    """The body, read within ``timeout`` seconds and ``limit`` bytes, its bytes reserved in
    ``budget`` until the block ends; raises ``BodyRefused`` otherwise.

    ``what`` names the request in a log line (never its path: it may hold a token).
    """
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise BodyRefused(413, f"body too large: the limit is {limit} bytes")
    held = declared or 0
    if not budget.take(held):
        raise BodyRefused(503, "too many request bodies at once; retry later")
    try:
        body = bytearray()
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise BodyRefused(413, f"body too large: the limit is {limit} bytes")
                    if len(body) > held:  # undeclared (chunked) or longer than declared
                        if not budget.take(len(body) - held):
                            raise BodyRefused(503, "too many request bodies at once; retry later")
                        held = len(body)
        except TimeoutError:
            raise BodyRefused(408, f"body not received within {timeout:g} s") from None
        except ClientDisconnect:
            log.info(
                "a client left during its upload (%s, %d of %s bytes)",
                what,
                len(body),
                "?" if declared is None else declared,
            )
            raise BodyRefused(400, "client disconnected") from None
        yield bytes(body)
    finally:
        budget.give(held)
