"""The one place the engine reads the time from.

The pipeline, the frequency caps, the reward windows and the model versions all ask
``engine.clock.utcnow()`` (re-exported as ``engine.models.utcnow``). A benchmark or a test
swaps the clock with ``use_clock(SimulatedClock(start))`` and advances it, so days of
sends run through the real decision, ledger and reward code in minutes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


def system_now() -> datetime:
    """The wall clock, as aware UTC."""
    return datetime.now(UTC)


_source: Callable[[], datetime] = system_now


def as_utc(moment: datetime) -> datetime:
    """Convert any datetime to aware UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utcnow() -> datetime:
    """Now, as aware UTC, from the clock in use (the wall clock unless one was set)."""
    return _source()


@contextmanager
def use_clock(source: Callable[[], datetime]) -> Iterator[None]:
    """Read the time from ``source`` (a callable returning aware datetimes) in this block.

    Process-wide: every thread of the engine sees the same clock, as a simulation needs.
    """
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


class SimulatedClock:
    """A clock that only moves when told: ``advance(timedelta)`` or ``set(datetime)``.

    Calling the clock returns the current simulated time, so it plugs into ``use_clock``.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs an aware datetime (UTC)")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by ``delta`` (never backwards); return the new time."""
        if delta < timedelta(0):
            raise ValueError("a clock does not run backwards")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (aware), which must not be before the current time."""
        with self._lock:
            if moment.astimezone(UTC) < self._now:
                raise ValueError("a clock does not run backwards")
            self._now = moment.astimezone(UTC)
