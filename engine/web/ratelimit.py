"""A per-client rate limit: one token bucket per client, in a table of bounded size.

Each process keeps its own table (a load balancer spreading a client over N processes
gives it N times the rate). A client seen again after being evicted from a full table
starts with a full bucket: eviction can only be generous, never refuse a newcomer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 65536


class RateLimiter:
    """``allow(client)`` spends one token of ``client``'s bucket (``rate``/s, ``burst``)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Refill ``rate`` tokens a second up to ``burst``; track at most ``max_clients``."""
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self.refused = 0
        # client -> (tokens left, when counted); least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        """True (and one token spent) when ``client`` is within its rate."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.refused += 1
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed
