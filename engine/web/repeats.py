"""Repeated opens and clicks: one stored event per token per short window.

A pixel reloaded 300 times, or a link hammered by one client, is one event in the
database; the repeats within ``window`` seconds are counted here (``GET /health`` shows
the counts) and stored nowhere. The key includes the bot and machine flags, so a scanner's
probe never hides the human click that follows it. The table is bounded: when it is full
the oldest key goes first, so its next repeat is stored again (generous, never lossy).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable

MAX_KEYS = 200_000


class RepeatWindow:
    """``first(kind, key)``: True for the first sight of ``key`` within the window."""

    def __init__(
        self,
        window: float,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Remember keys for ``window`` seconds (0 turns the window off), at most ``max_keys``."""
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self.repeats: Counter[str] = Counter()
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()  # in insertion order

    def first(self, kind: str, key: Hashable) -> bool:
        """True when ``key`` was not seen in the window (and remember it); else count it."""
        if self.window <= 0:
            return True
        now = self.clock()
        key = (kind, key)  # a click's (id, 0, False) must not be an open's (id, False, False)
        expiry = self._expiry
        while expiry:  # every key expires in insertion order: drop the stale front
            oldest, until = next(iter(expiry.items()))
            if until > now:
                break
            del expiry[oldest]
        if key in expiry:
            self.repeats[kind] += 1
            return False
        expiry[key] = now + self.window
        if len(expiry) > self.max_keys:
            expiry.popitem(last=False)
        return True
