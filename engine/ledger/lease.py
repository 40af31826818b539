"""Workers and their leases: who holds a ledger row, and until when.

A worker is one run of one campaign in one process. Its owner id, ``<host>/<tag>``, is
written on every row it claims with a lease expiry; a keeper thread renews the expiry of
the rows it still holds every third of the lease. Another worker takes over those rows
only when the owner is dead: on the same host, when the owner's journal is no longer
locked (the kernel dropped the lock when it died: no waiting); elsewhere, when the lease
has expired (so clocks across hosts should agree to well within a lease).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.appendlog import Syncer
from engine.clock import system_now as utcnow  # leases are about real time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """A worker's identity: the host it runs on and a tag unique on that host."""

    host: str
    tag: str

    @classmethod
    def new(cls) -> Worker:
        """A fresh identity for a worker starting in this process."""
        return cls(socket.gethostname(), f"{os.getpid()}-{secrets.token_hex(4)}")

    @classmethod
    def parse(cls, owner: str) -> Worker | None:
        """The worker an owner id names, or None for a value this module did not write."""
        host, slash, tag = owner.rpartition("/")
        return cls(host, tag) if slash and host and tag else None

    @property
    def owner(self) -> str:
        """The owner id stored in the ledger."""
        return f"{self.host}/{self.tag}"

    def is_local(self) -> bool:
        """Whether the worker ran on this host (so its journal may be here)."""
        return self.host == socket.gethostname()


def expired(expiry: datetime | None, now: datetime | None = None) -> bool:
    """Whether a lease that ran until ``expiry`` is over (no expiry: nothing is held)."""
    return expiry is None or expiry <= (now or utcnow())


class LeaseKeeper:
    """Calls ``renew(new_expiry)`` every third of ``lease`` until stopped."""

    def __init__(self, lease: timedelta, renew: Callable[[datetime], None]) -> None:
        """Nothing runs until ``start``."""
        self.lease = lease
        self._renew = renew
        self._beat: Syncer | None = None

    def expiry(self) -> datetime:
        """The expiry a lease taken now gets."""
        return utcnow() + self.lease

    def start(self) -> None:
        """Start renewing in a daemon thread, every third of the lease."""
        self._beat = Syncer(self._renew_now, self.lease.total_seconds() / 3, "ledger-lease")
        self._beat.start()

    def stop(self) -> None:
        """Stop renewing (the rows' leases then run out on their own)."""
        if self._beat is not None:
            self._beat.stop()
            self._beat = None

    def _renew_now(self) -> None:
        try:
            self._renew(self.expiry())
        except Exception:  # a database blip: the next beat tries again
            log.warning("could not renew the ledger lease", exc_info=True)
