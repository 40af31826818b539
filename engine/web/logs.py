"""What the tracking server logs: tokens cut out, and refusals at a bounded rate.

Tokens never reach a log: the access log shows ``/c/…`` with the token cut, because a
token is a credential (it unsubscribes its recipient) and logs travel further than links.
The cut is made on the percent-decoded text too (``/%75/<token>`` is ``/u/<token>``).

A hostile client can make a server log as fast as it can make it refuse: malformed
requests, 4xx answers, an accept loop out of descriptors. ``BoundedRate`` lets through
a few records of each kind per interval and says how many it held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

_TOKEN_PATH = re.compile(r"(/[cou]/)[A-Za-z0-9_-]+")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error")
# Loggers a client can make write: uvicorn's ("Invalid HTTP request received.", 4xx
# access lines), asyncio's accept-loop errors, and the refusal notes of the tracking app.
# (A logger's filters see only its own records, not its children's: each is named.)
BOUNDED_LOGGERS = (
    "uvicorn.access",
    "uvicorn.error",
    "asyncio",
    "engine.web.app",
    "engine.web.bodies",
    "engine.web.connections",
    "engine.web.webhooks",
    "plugins.webhooks.ses",
)
BURST = 5
INTERVAL = 10.0


def redact(text: str) -> str:
    """``text`` with every tracking token cut: ``/c/<token>`` becomes ``/c/…``.

    A percent-encoded path is cut as the router reads it (decoded); what it decodes to is
    logged with control characters kept encoded, so a path cannot forge a log line.
    """
    cut = _TOKEN_PATH.sub(r"\1…", text)
    decoded = unquote(cut)
    if decoded == cut or not _TOKEN_PATH.search(decoded):
        return cut
    cut = _TOKEN_PATH.sub(r"\1…", decoded)
    return _UNPRINTABLE.sub(lambda match: quote(match.group()), cut)


class RedactTokens(logging.Filter):
    """Cuts tracking tokens out of log records (uvicorn's access log passes the path as an
    argument, so the arguments are redacted as well as the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class BoundedRate(logging.Filter):
    """At most ``burst`` records of one kind per ``interval`` seconds; the first record let
    through after a quiet spell says how many were held back.

    A kind is the logger and the message template; for the access log, the status code
    (answers under 400 always pass: they are the server's normal work).
    """

    def __init__(
        self,
        burst: int = BURST,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Let ``burst`` records of a kind through per ``interval`` seconds."""
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, Any], list[float]] = {}  # [window start, passed, held]

    def _kind(self, record: logging.LogRecord) -> tuple[str, Any] | None:
        if record.name == "uvicorn.access":
            status = record.args[-1] if isinstance(record.args, tuple) and record.args else 0
            return None if isinstance(status, int) and status < 400 else (record.name, status)
        return record.name, record.msg

    def filter(self, record: logging.LogRecord) -> bool:
        """True to log ``record``; False when its kind used its share of the interval."""
        kind = self._kind(record)
        if kind is None:
            return True
        now = self.clock()
        with self._lock:
            if len(self._kinds) > 1024:  # message templates are few; never grow unbounded
                self._kinds.clear()
            window = self._kinds.setdefault(kind, [now, 0, 0])
            if now - window[0] >= self.interval:
                held = int(window[2])
                window[:] = [now, 0, 0]
                if held:
                    record.msg = f"{record.getMessage()} [{held} similar lines held back]"
                    record.args = None
            if window[1] >= self.burst:
                window[2] += 1
                return False
            window[1] += 1
            return True


def install_log_bounds() -> None:
    """Put ``RedactTokens`` and ``BoundedRate`` on the loggers a client can reach (after
    uvicorn configured its logging, which replaces handlers but keeps logger filters)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    for name in BOUNDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, BoundedRate) for f in logger.filters):
            logger.addFilter(BoundedRate())
