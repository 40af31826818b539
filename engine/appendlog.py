"""Append-only local logs: what the click intake's log and the send journal share.

Both hand each record to the OS with ``os.write`` before their caller goes on (so it
survives a SIGKILL of the process), let a syncer thread ``fdatasync`` records in groups
(so a power cut costs at most one interval), hold an exclusive ``flock`` on their file for
as long as their process lives (the kernel drops it however the process dies), and are
adopted by another process once the lock is free. Records are lines; a power cut may tear
the last one, so readers split off what follows the last newline.

Each log keeps its own file format and naming (``engine.feedback.eventlog``,
``engine.ledger.journal``); this module only moves bytes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def open_append(path: Path) -> int:
    """Open (creating, owner-only) ``path`` for appending; the descriptor."""
    return os.open(path, OPEN_FLAGS, 0o600)


def write_all(fd: int, data: bytes, *, end_torn_line: bool = False) -> None:
    """Hand all of ``data`` to the OS (``os.write`` may take less than it is given).

    Raises ``OSError`` (a full disk, say). With ``end_torn_line``, a record cut short by the
    error is ended with a newline so that the next record starts on a line of its own.
    """
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        if end_torn_line and len(view) != len(data):
            with suppress(OSError):
                os.write(fd, b"\n")
        raise


def fsync_directory(directory: Path) -> None:
    """Make a new (or removed) file's name durable, not only its contents."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_and_close(fd: int, *, data_only: bool = True) -> None:
    """``fdatasync`` (or ``fsync``) then close ``fd``: a duplicate taken under the writer's
    lock, so the slow sync runs outside it and appends never wait for the disk."""
    try:
        if data_only:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
    finally:
        os.close(fd)


class Syncer:
    """A daemon thread that calls ``sync`` every ``interval`` seconds until ``stop``."""

    def __init__(self, sync: Callable[[], None], interval: float, name: str) -> None:
        """Nothing runs until ``start``."""
        self._sync = sync
        self.interval = interval
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Syncer:
        """Start the thread."""
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and wait for it (a last sync is the caller's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sync()


def lock_for_life(fd: int) -> None:
    """Hold an exclusive lock on ``fd``'s file until it is closed (or the process dies);
    raises ``BlockingIOError`` when another process holds it."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def create_locked(path: Path, flags: int = OPEN_FLAGS) -> int:
    """Create ``path`` already locked for this process's life; its descriptor.

    The file is made under a temporary name, locked, then renamed into place, so that no
    one looking for dead owners' files (``lock_if_dead``) can find it unlocked between its
    creation and its lock, take it for a dead process's and adopt it.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    fd = os.open(temporary, flags | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        lock_for_life(fd)
        os.replace(temporary, path)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    return fd


class Liveness:
    """What the host says about another process's log file."""

    LIVE = "live"  # locked by a living process
    DEAD = "dead"  # unlocked: its process is gone
    MISSING = "missing"  # no such file (another project, or deleted)


def lock_if_dead(path: Path, flags: int = os.O_RDWR) -> tuple[str, int]:
    """Open and lock ``path`` if the process that held it is gone.

    Returns ``(Liveness.DEAD, fd)`` with the lock held until the caller closes ``fd``, or
    ``(Liveness.LIVE, -1)`` / ``(Liveness.MISSING, -1)``. A file unlinked between our open
    and our lock (its owner closed cleanly, or another adopter finished) counts as missing.
    """
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        return Liveness.MISSING, -1
    try:
        lock_for_life(fd)
    except BlockingIOError:
        os.close(fd)
        return Liveness.LIVE, -1
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return Liveness.MISSING, -1
    return Liveness.DEAD, fd


def split_records(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole lines of ``data`` (without their newlines) and what follows the last
    newline: a torn record, or ``b""``."""
    cut = data.rfind(b"\n") + 1
    return data[:cut].split(b"\n")[:-1], data[cut:]


def read_records(path: Path) -> tuple[list[bytes], bytes]:
    """``split_records`` of a file's bytes; a missing file has none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], b""
    return split_records(data)


def remove(paths: Iterable[Path]) -> None:
    """Delete ``paths`` (those already gone are fine)."""
    for path in paths:
        path.unlink(missing_ok=True)
