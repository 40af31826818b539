"""The intake's durable local log: append-only segment files, one set per process.

A record's bytes are handed to the OS (``os.write``) before the request is answered, so an
acknowledged event survives a SIGKILL of the server; a syncer thread ``fdatasync``s them in
groups every ``sync_interval`` (50 ms), so a power cut costs at most that much.

Each process writes its own segments (``<tag>.<n>.log``) and holds an exclusive ``flock``
on ``<tag>.lock`` for as long as it lives. The kernel drops the lock when the process dies,
however it dies, so another process (a restarted server, the reward job) can tell a dead
process's log from a live one and adopt it: several servers on one host never share a file.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from engine.appendlog import (
    Liveness,
    Syncer,
    create_locked,
    fsync_directory,
    lock_if_dead,
    open_append,
    read_records,
    remove,
    split_records,
    sync_and_close,
    write_all,
)

SEGMENT_BYTES = 8 * 1024 * 1024
SYNC_INTERVAL = 0.05  # seconds; the bound is 100 ms


def segment_paths(directory: Path, tag: str) -> list[Path]:
    """The segments of the log ``tag``, oldest first."""
    return sorted(directory.glob(f"{tag}.*.log"))


def read_lines(path: Path) -> list[bytes]:
    """Every line of a closed segment; a torn last line (a power cut) is returned too."""
    lines, torn = read_records(path)
    return [*lines, torn] if torn else lines


class EventLog:
    """This process's log: ``append`` lines, synced in groups, rotated by size."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        sync_interval: float = SYNC_INTERVAL,
    ) -> None:
        """A log under ``directory``; nothing is opened until ``open``."""
        self.directory = directory
        self.tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.segment_bytes = segment_bytes
        self.sync_interval = sync_interval
        self._lock = threading.Lock()
        self._segment = 0
        self._fd = -1
        self._size = 0
        self._dirty = False
        self._retired: list[int] = []  # rotated segments' fds, synced then closed by the syncer
        self._new_names = False
        self._lock_fd = -1
        self._syncer: Syncer | None = None

    # -- owner side ---------------------------------------------------------------------
    def open(self) -> EventLog:
        """Create the directory, take this log's lock, open segment 0, start the syncer."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = create_locked(self.lock_path, os.O_RDWR)  # never seen unlocked
        self._fd = open_append(self.segment_path(0))
        fsync_directory(self.directory)
        self._syncer = Syncer(self.sync, self.sync_interval, "intake-fsync").start()
        return self

    @property
    def lock_path(self) -> Path:
        """The lock file this process holds while its log is live."""
        return self.directory / f"{self.tag}.lock"

    def segment_path(self, number: int) -> Path:
        """The file of segment ``number``."""
        return self.directory / f"{self.tag}.{number:06d}.log"

    @property
    def segment(self) -> int:
        """The number of the segment being appended to."""
        with self._lock:
            return self._segment

    def append(self, line: bytes) -> None:
        """Write ``line`` (ending in a newline) to the OS; raises ``OSError`` (disk full)."""
        with self._lock:
            write_all(self._fd, line, end_torn_line=True)  # so the next line stays whole
            self._size += len(line)
            self._dirty = True
            if self._size >= self.segment_bytes:
                self._retired.append(self._fd)
                self._segment += 1
                self._fd = open_append(self.segment_path(self._segment))
                self._size = 0
                self._new_names = True

    def sync(self) -> None:
        """Flush what was appended to the disk (what the syncer does every interval)."""
        with self._lock:
            if self._fd < 0:
                return
            retired, self._retired = self._retired, []
            # A duplicate descriptor: the slow fdatasync runs outside the lock, so
            # appends (the request path) never wait for the disk.
            current = os.dup(self._fd) if self._dirty else -1
            self._dirty = False
            new_names, self._new_names = self._new_names, False
        for fd in retired:
            sync_and_close(fd, data_only=False)
        if current >= 0:
            sync_and_close(current)
        if new_names:
            fsync_directory(self.directory)

    def close(self, *, discard: bool) -> None:
        """Stop the syncer and sync; with ``discard`` (all stored) delete the log's files."""
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        self.sync()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        if discard:
            remove([*segment_paths(self.directory, self.tag), self.lock_path])
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: the log may now be adopted
            self._lock_fd = -1


class Tail:
    """Reads one live log's segments in order as they grow (the writer's cursor).

    ``read`` returns whole lines only; ``release`` deletes the segments read to their end,
    once the caller has stored what they held.
    """

    def __init__(self, log: EventLog, start: int = 0) -> None:
        """A cursor at the start of segment ``start`` of ``log``."""
        self.log = log
        self._segment = start
        self._offset = 0
        self._finished: list[Path] = []

    def read(self, limit: int = 1 << 20) -> list[bytes]:
        """Up to about ``limit`` bytes of whole new lines (possibly none)."""
        lines: list[bytes] = []
        budget = limit
        while budget > 0:
            path = self.log.segment_path(self._segment)
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read(budget)
            except FileNotFoundError:
                chunk = b""
            whole, torn = split_records(chunk)
            cut = len(chunk) - len(torn)
            if cut:
                lines += whole
                self._offset += cut
                budget -= cut
                continue
            # Nothing whole left here: move on only if the appender already rotated, and
            # read once more after seeing that, since its last write came before rotating.
            if self._segment >= self.log.segment:
                break
            with path.open("rb") as handle:
                handle.seek(self._offset)
                rest = handle.read()
            whole, torn = split_records(rest)
            lines += [*whole, torn] if torn else whole  # a torn tail is kept to be rejected
            self._finished.append(path)
            self._segment += 1
            self._offset = 0
        return lines

    def release(self) -> None:
        """Delete the segments read to their end (call after storing what ``read`` gave)."""
        remove(self._finished)
        self._finished.clear()


class Orphan:
    """A dead process's log, locked by us while we store and then delete it."""

    def __init__(self, directory: Path, tag: str, lock_fd: int) -> None:
        """Hold ``lock_fd`` (the flock on ``<tag>.lock``) until ``finish`` or ``release``."""
        self.directory = directory
        self.tag = tag
        self._lock_fd = lock_fd

    def segments(self) -> list[Path]:
        """The orphan's segments, oldest first."""
        return segment_paths(self.directory, self.tag)

    def finish(self) -> None:
        """Everything is stored: delete the segments, then the lock file, then unlock."""
        remove([*self.segments(), self.directory / f"{self.tag}.lock"])
        self.release()

    def release(self) -> None:
        """Give the orphan back (its files stay for the next adopter)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def orphans(directory: Path, own_tag: str | None = None) -> Iterator[Orphan]:
    """Each log under ``directory`` whose process is gone, locked for the caller in turn."""
    if not directory.is_dir():
        return
    for lock_path in sorted(directory.glob("*.lock")):
        tag = lock_path.stem
        if tag == own_tag:
            continue
        liveness, fd = lock_if_dead(lock_path)
        if liveness != Liveness.DEAD:
            continue  # a live process's log, or adopted and deleted by someone else meanwhile
        orphan = Orphan(directory, tag, fd)
        try:
            yield orphan
        finally:
            orphan.release()
