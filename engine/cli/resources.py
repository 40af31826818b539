"""Running out of a resource (disk space) as one line a user can act on.

A full disk shows up as different exceptions (``OSError`` with ``ENOSPC`` from a file
write, SQLite's "database or disk is full", PostgreSQL's ``DiskFull``); ``out_of_space``
recognizes each anywhere in an exception's chain and says what ran out.
"""

from __future__ import annotations

import errno

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = "database or disk is full"
_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def out_of_space(exc: BaseException) -> str | None:
    """What ran out of disk space in ``exc`` (or its causes), one line; None: not that."""
    for link in _chain(exc):
        original = getattr(link, "orig", None)  # SQLAlchemy's wrapper of a DB-API error
        if original is not None and (
            _SQLITE_FULL in str(original)
            or getattr(original, "pgcode", None) == _POSTGRES_DISK_FULL
        ):
            first = str(original).strip().splitlines()[0]
            return f"the database is out of disk space ({first}): free space on its disk"
        if isinstance(link, OSError) and link.errno in _NO_SPACE:
            where = f" writing {link.filename}" if link.filename else ""
            return f"out of disk space{where} ({link.strerror}): free space on that disk"
    return None
