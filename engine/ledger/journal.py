"""The hand-over journal: one append-only local file per worker, recording for each message
"handing it to the transport" just before it goes and its outcome right after.

Why: the database learns a batch's outcomes only when the batch is recorded, so a worker
killed in the middle of a batch would leave the whole batch ambiguous. The journal narrows
that to the messages actually with the transport: a message with a hand-over record and no
outcome is in flight (``unknown``); one with an outcome has it; one with no record never
reached the transport and is sent again.

Cost: each record is one ``os.write`` (its bytes are with the OS before the message goes,
so they survive a SIGKILL of the worker); a syncer thread ``fdatasync``s the file in groups
every ``sync_interval`` (5 ms). A power cut can lose the unsynced tail, so the file names
the boot it was written in (Linux ``boot_id``): after a reboot, a missing record proves
nothing and those rows are ``unknown``, as without a journal. Once a batch is recorded in
the database its records only concern rows no longer held (ignored on recovery), and the
file is cut back to its header whenever it passes ``CUT_BYTES``.

The worker holds an exclusive ``flock`` on its file while it lives; the kernel drops it when
the process dies, however it dies, which is how another worker on the host tells a dead
worker's journal from a live one (``adopt``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from engine.appendlog import (
    Liveness,
    Syncer,
    create_locked,
    fsync_directory,
    lock_if_dead,
    split_records,
    sync_and_close,
    write_all,
)
from engine.types import Message, SendResult, SendStatus

__all__ = [
    "CUT_BYTES",
    "SUFFIX",
    "SYNC_INTERVAL",
    "Journal",
    "JournalState",
    "Liveness",
    "adopt",
    "boot_id",
    "dead_journals",
    "parse",
]

SYNC_INTERVAL = 0.005  # seconds between group commits
CUT_BYTES = 1 << 20  # ``reset`` cuts the file back once it is this long
SUFFIX = ".journal"


def boot_id() -> str | None:
    """This machine's boot id (Linux), or None where the system does not tell."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


@dataclass
class JournalState:
    """What a journal says about the messages of the batch it covers.

    ``complete``: the file is known to hold every record written (same boot), so a message
    with no record never reached the transport.
    """

    complete: bool
    handed: set[int] = field(default_factory=set)
    outcomes: dict[int, SendResult] = field(default_factory=dict)


def _outcome_line(result: SendResult) -> bytes:
    provider = result.provider_id
    if (
        result.status is SendStatus.SENT
        and result.error is None
        and provider  # the common case, cheaply: "S <send id> <provider id>"
        and provider.isprintable()
        and " " not in provider
    ):
        return f"S {result.send_id} {provider}\n".encode()
    fields = [result.send_id, str(result.status), provider, result.error, result.rejected]
    return b"O " + json.dumps(fields).encode() + b"\n"


def parse(data: bytes) -> JournalState:
    """The state recorded in a journal's bytes (a torn last line is ignored)."""
    lines, torn = split_records(data)
    try:
        header = json.loads(lines[0] if lines else torn)
        boot = header["boot"]
    except (ValueError, KeyError, TypeError):
        return JournalState(complete=False)  # torn header: trust nothing but outcomes
    state = JournalState(complete=boot is not None and boot == boot_id())
    for line in lines[1:]:  # what follows the last newline may be torn: not a record
        kind, _, rest = line.partition(b" ")
        try:
            if kind == b"H":
                state.handed.add(int(rest))
            elif kind == b"S":
                number, _, provider = rest.decode().partition(" ")
                send_id = int(number)
                state.outcomes[send_id] = SendResult(send_id, SendStatus.SENT, provider)
            elif kind == b"O":
                send_id, status, provider_id, error, rejected = json.loads(rest)
                state.outcomes[send_id] = SendResult(
                    send_id, SendStatus(status), provider_id, error, bool(rejected)
                )
        except ValueError:
            state.complete = False  # a damaged line: missing records prove nothing
    return state


class Journal:
    """A worker's journal: ``handing_over`` and ``outcome`` append, ``reset`` cuts it back.

    It is the ``HandoverObserver`` the engine gives the delivery backend (thread-safe, so a
    backend with a connection pool may report from several threads).
    """

    def __init__(self, directory: Path, tag: str, *, sync_interval: float = SYNC_INTERVAL):
        """The journal ``<directory>/<tag>.journal``; nothing is opened until ``open``."""
        self.path = directory / f"{tag}{SUFFIX}"
        self.sync_interval = sync_interval
        self._lock = threading.Lock()
        self._fd = -1
        self._header = b""
        self._size = 0
        self._dirty = False
        self._state = JournalState(complete=True)
        self._syncer: Syncer | None = None

    def open(self) -> Journal:
        """Create the file, lock it for this process's life, write the header."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = create_locked(self.path)  # a scanner never sees it unlocked
        self._header = json.dumps({"boot": boot_id(), "pid": os.getpid()}).encode() + b"\n"
        os.ftruncate(self._fd, 0)
        self._write(self._header)
        os.fsync(self._fd)
        fsync_directory(self.path.parent)
        self._syncer = Syncer(self._sync_quietly, self.sync_interval, "journal-fsync").start()
        return self

    # -- the HandoverObserver side --------------------------------------------------------
    def handing_over(self, message: Message) -> None:
        """Record that ``message`` goes to the transport now (before it goes)."""
        with self._lock:
            self._write(b"H %d\n" % message.send_id)
            self._state.handed.add(message.send_id)

    def outcome(self, result: SendResult) -> None:
        """Record how the transport answered for one message."""
        with self._lock:
            self._write(_outcome_line(result))
            self._state.outcomes[result.send_id] = result

    # -- the ledger side ------------------------------------------------------------------
    def state(self) -> JournalState:
        """What this journal holds since the last ``reset`` (a copy)."""
        with self._lock:
            return JournalState(True, set(self._state.handed), dict(self._state.outcomes))

    def reset(self) -> None:
        """The batch is recorded in the database: forget it (and cut the file back to its
        header once it is long; records of rows no longer held are ignored anyway)."""
        with self._lock:
            if self._fd < 0:
                return
            self._state = JournalState(complete=True)
            if self._size >= CUT_BYTES:
                os.ftruncate(self._fd, len(self._header))
                self._size = len(self._header)

    def sync(self) -> None:
        """Flush what was written to the disk (what the syncer does every interval)."""
        with self._lock:
            if self._fd < 0 or not self._dirty:
                return
            self._dirty = False
            # A duplicate descriptor: the slow fdatasync runs outside the lock, so the
            # send path never waits for the disk.
            fd = os.dup(self._fd)
        sync_and_close(fd)

    def close(self, *, discard: bool = True) -> None:
        """Stop the syncer, delete the file (``discard``: all settled), then drop the lock.

        Without ``discard`` the file stays, unlocked, for a later worker to adopt.
        """
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        with self._lock:
            if self._fd < 0:
                return
            if discard:
                self.path.unlink(missing_ok=True)
            else:
                os.fsync(self._fd)
            os.close(self._fd)  # releases the flock
            self._fd = -1

    def _write(self, data: bytes) -> None:
        write_all(self._fd, data)
        self._size += len(data)
        self._dirty = True

    def _sync_quietly(self) -> None:
        with suppress(OSError):  # the syncer keeps going; ``close`` syncs for good
            self.sync()


@contextmanager
def adopt(directory: Path, tag: str) -> Iterator[tuple[str, JournalState | None]]:
    """Lock a dead worker's journal for the duration: yields its liveness and, if dead, its
    state. On leaving, a dead journal is deleted (the caller settled its rows)."""
    path = directory / f"{tag}{SUFFIX}"
    liveness, fd = lock_if_dead(path)
    if liveness != Liveness.DEAD:
        yield liveness, None
        return
    try:
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        yield Liveness.DEAD, parse(data)
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def dead_journals(directory: Path) -> list[str]:
    """The tags of the journals under ``directory`` whose workers are gone."""
    if not directory.is_dir():
        return []
    tags = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        liveness, fd = lock_if_dead(path, os.O_RDONLY)
        if liveness == Liveness.DEAD:
            os.close(fd)
            tags.append(path.name.removesuffix(SUFFIX))
    return tags
