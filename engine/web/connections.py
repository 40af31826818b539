"""Connections under bounds: a deadline for each request head, and caps on open ones.

uvicorn closes an idle kept-alive connection, but a connection that sends nothing after
opening, or sends its head a line at a time, is held for ever; and its
``limit_concurrency`` answers 503 only after accepting, so each idle socket still holds a
descriptor. ``GuardedH11Protocol`` (uvicorn's h11 protocol, plus):

- a head deadline: a request's head must be complete within ``header_timeout`` of the
  connection opening, or of the previous answer on a kept-alive connection; else the
  connection is closed;
- a cap per client (the peer address; an IPv6 /64), except for trusted proxies, whose
  own limits must do that job: a connection over it is closed as soon as it is accepted;
- a cap on all connections: when it is reached a newcomer is admitted by closing a
  connection still waiting for its head from the client holding the most, if that client
  holds more than the newcomer would; otherwise the newcomer is closed.

Refusals cost an accept and a close, and are logged as one summary line per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr

from engine.web.clients import ClientAddresses, client_key

log = logging.getLogger(__name__)

SUMMARY_INTERVAL = 10.0  # seconds between refusal summaries
QUIET_TIMEOUTS = 100  # head deadlines per interval worth a line of their own (browsers
# open spare connections they never use: a few are normal)


class ConnectionGuard:
    """The open connections of one server, per client and in all, and its refusals."""

    def __init__(
        self,
        clients: ClientAddresses,
        *,
        max_connections: int,
        per_client: int,
        header_timeout: float,
    ) -> None:
        """Admit at most ``max_connections`` (``per_client`` from one client)."""
        self.clients = clients
        self.max_connections = max_connections
        self.per_client = per_client
        self.header_timeout = header_timeout
        self.total = 0
        self._open: dict[str, set[GuardedH11Protocol]] = {}
        self.refused: Counter[str] = Counter()  # since the last summary
        self.timed_out = 0
        self._summary: asyncio.TimerHandle | None = None

    def open_from(self, client: str) -> int:
        """How many connections ``client`` holds."""
        return len(self._open.get(client, ()))

    def admit(self, connection: GuardedH11Protocol) -> bool:
        """Count ``connection`` in, or say no (the caller closes it)."""
        key = connection.client_key
        mine = self._open.get(key, set())
        if not connection.via_proxy and len(mine) >= self.per_client:
            return self._refuse("over the per-client cap")
        if self.total >= self.max_connections and not self._make_room(len(mine) + 1):
            return self._refuse("server full")
        self._open.setdefault(key, mine).add(connection)
        self.total += 1
        return True

    def release(self, connection: GuardedH11Protocol) -> None:
        """Count ``connection`` out (again is harmless)."""
        mine = self._open.get(connection.client_key)
        if mine is None or connection not in mine:
            return
        mine.discard(connection)
        self.total -= 1
        if not mine:
            del self._open[connection.client_key]

    def _make_room(self, newcomer_would_hold: int) -> bool:
        """Close one waiting connection of the heaviest client, if it holds more."""
        heaviest = max(self._open.values(), key=len, default=set())
        if len(heaviest) <= newcomer_would_hold:
            return False
        for connection in heaviest:
            if connection.waiting_for_head:
                self.release(connection)
                connection.close_now()
                self.refused["closed to make room"] += 1
                self._schedule_summary()
                return True
        return False

    def _refuse(self, why: str) -> bool:
        self.refused[why] += 1
        self._schedule_summary()
        return False

    def head_timed_out(self) -> None:
        """A connection missed its head deadline (counted for the summary)."""
        self.timed_out += 1
        self._schedule_summary()

    def _schedule_summary(self) -> None:
        if self._summary is None:
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(SUMMARY_INTERVAL, self.summarize)

    def summarize(self) -> None:
        """Log what was refused since the last summary, in one line, and start over."""
        self._summary = None
        refused, self.refused = self.refused, Counter()
        timed_out, self.timed_out = self.timed_out, 0
        if not refused and timed_out < QUIET_TIMEOUTS:
            return
        busiest = max(self._open.items(), key=lambda item: len(item[1]), default=("-", ()))
        reasons = ", ".join(f"{n} {why}" for why, n in refused.most_common()) or "none"
        log.warning(
            "connections refused in the last %g s: %s; %d closed without a request head "
            "within %g s; %d open (busiest client %s: %d)",
            SUMMARY_INTERVAL,
            reasons,
            timed_out,
            self.header_timeout,
            self.total,
            busiest[0],
            len(busiest[1]),
        )


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off for an accepted connection.

    asyncio does so only for sockets whose ``proto`` says TCP, and a listening socket made
    by ``socket.create_server`` (``listen``, ``BackgroundServer``) says 0: its connections
    kept Nagle on, and uvicorn's answer (head, then body: two writes) waited for the
    client's delayed ACK, about 40 ms a request on a kept-alive connection.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # already closed by the client
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and the guard's caps (``bind`` first)."""

    guard: ClassVar[ConnectionGuard]

    @classmethod
    def bind(cls, guard: ConnectionGuard) -> type[GuardedH11Protocol]:
        """A subclass whose connections answer to ``guard`` (one per server)."""
        return type("GuardedH11Protocol", (cls,), {"guard": guard})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As uvicorn's; the guard's state starts empty."""
        super().__init__(*args, **kwargs)
        self.client_key = ""
        self.via_proxy = False
        self.admitted = False
        self._head_timer: asyncio.TimerHandle | None = None

    @property
    def waiting_for_head(self) -> bool:
        """True between opening (or the last answer) and a request's complete head."""
        return self._head_timer is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection (or close it at once) and start its head deadline."""
        assert isinstance(transport, asyncio.Transport)
        peer = get_remote_addr(transport)
        address = peer[0] if peer else "unknown"
        self.client_key = client_key(address)
        self.via_proxy = self.guard.clients.trusted(address)
        if not self.guard.admit(self):
            transport.abort()
            return
        self.admitted = True
        _no_delay(transport)
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Count the connection out; a refused one never reached uvicorn's state."""
        if not self.admitted:
            return
        self._disarm_head_deadline()
        self.guard.release(self)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """uvicorn's; a request whose head is complete has met its deadline."""
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        """uvicorn's; the next request's head gets a deadline of its own."""
        self._arm_head_deadline()
        super().on_response_complete()

    def close_now(self) -> None:
        """Drop the connection without a word (it has sent no complete request)."""
        self._disarm_head_deadline()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        if self.transport is not None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(
                self.guard.header_timeout, self._head_deadline_passed
            )

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        self.guard.head_timed_out()
        self.close_now()
