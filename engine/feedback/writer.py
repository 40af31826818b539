"""The intake's database writer: a loop that tails one log and stores it in batches.

It runs either on a thread of the serving process (``Intake`` embedded in a test or the
demo) or, under ``serve`` and ``python -m engine.web``, in a child process of its own
(``WriterProcess`` starts ``python -m engine.web.writer``, which builds the child's engine
and runs this loop) at a lower CPU priority: inserting events costs far more Python time
than answering a click, and on a thread it holds the serving process's GIL, which is what
made clicks slow and their latency long under load. The child tails the parent's live
log by its file names, reports each stored sequence number on its standard output, and
exits when its standard input closes (the parent stopped or died); the parent restarts it
if it dies. A replay stores nothing twice: every record has a dedupe key.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.exc import DBAPIError, OperationalError

from engine.feedback.eventlog import Tail, segment_paths

log = logging.getLogger(__name__)

RETRY_CAP = 1.0  # seconds between attempts while the database is down
ADOPT_INTERVAL = 5.0  # seconds between looks for logs of dead processes
RESTART_DELAY = 1.0  # seconds before a dead writer process is started again

StoreLines = Callable[[Sequence[bytes]], int]


def transient(exc: Exception) -> bool:
    """True for "the database is not answering" (retry), False for a bad record."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class Writer:
    """Tails ``tail``, stores each batch with ``store`` (retrying while the database is
    down) and reports the highest stored sequence number to ``on_stored``."""

    def __init__(
        self,
        tail: Tail,
        store: StoreLines,
        on_stored: Callable[[int], None],
        adopt: Callable[[], object],
        *,
        stopping: threading.Event,
        wake: threading.Event,
    ) -> None:
        """Prepare the loop; ``run`` runs it until ``stopping`` is set."""
        self.tail = tail
        self.store = store
        self.on_stored = on_stored
        self.adopt = adopt
        self.stopping = stopping
        self.wake = wake
        self.database_ok = True

    def run(self) -> None:
        """Store what the log holds, and wait for more, until told to stop."""
        next_adopt = 0.0
        while not self.stopping.is_set():
            lines = self.tail.read()
            if lines:
                last = self._store_until_done(lines)
                if last is None:
                    return  # stopping while the database is down: the log keeps them
                self.tail.release()
                self.on_stored(last)
                continue
            if self.database_ok and time.monotonic() >= next_adopt:
                next_adopt = time.monotonic() + ADOPT_INTERVAL
                try:
                    self.adopt()
                except Exception:
                    log.exception("could not store the log of a stopped server")
            self.wake.wait(0.05)
            self.wake.clear()

    def _store_until_done(self, lines: list[bytes]) -> int | None:
        delay = 0.05
        while True:
            try:
                last = self.store(lines)
            except Exception as exc:
                if not transient(exc):
                    log.exception("the intake writer failed; retrying")
                elif self.database_ok:
                    log.warning("database unreachable; events wait in the intake log: %s", exc)
                self.database_ok = False
                if self.stopping.wait(delay):
                    return None
                delay = min(delay * 2, RETRY_CAP)
                continue
            if not self.database_ok:
                log.warning("database reachable again; the intake log is being stored")
            self.database_ok = True
            return last


class LogFiles:
    """Another process's live log, seen through its file names (what ``Tail`` needs)."""

    def __init__(self, directory: Path, tag: str) -> None:
        """The log ``tag`` under ``directory``."""
        self.directory = directory
        self.tag = tag

    def segment_path(self, number: int) -> Path:
        """The file of segment ``number``."""
        return self.directory / f"{self.tag}.{number:06d}.log"

    @property
    def segment(self) -> int:
        """The newest segment: the appender creates it only after its last write to the
        one before, so every older segment is complete."""
        return self._numbers()[-1]

    def first_segment(self) -> int:
        """The oldest segment still on disk (the ones before it were stored and deleted)."""
        return self._numbers()[0]

    def _numbers(self) -> list[int]:
        """The segment numbers on disk, oldest first ([0] when there is none yet)."""
        paths = segment_paths(self.directory, self.tag)
        return [int(path.name.split(".")[-2]) for path in paths] or [0]


class WriterProcess:
    """The parent's handle on the writer child of its log ``tag``; restarts it if it dies."""

    def __init__(self, project_dir: Path, on_stored: Callable[[int], None]) -> None:
        """Children build their engine from ``project_dir`` and the inherited environment."""
        self.project_dir = project_dir
        self.on_stored = on_stored
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, directory: Path, tag: str) -> None:
        """Start the child for the log ``tag`` under ``directory`` and watch it."""
        self._stopping.clear()
        command = [sys.executable, "-m", "engine.web.writer", "-p", str(self.project_dir)]
        command += ["--spool", str(directory), "--tag", tag]
        self._watcher = threading.Thread(
            target=self._watch, args=(command,), name="intake-writer-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self, command: list[str]) -> None:
        while not self._stopping.is_set():
            # Its own process group: a Ctrl-C at the terminal reaches the parent only,
            # which stops the child by closing its input (no traceback from the child).
            child = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0
            )
            self._child = child
            assert child.stdout is not None
            for line in child.stdout:  # one line per stored batch: its last sequence number
                self.on_stored(int(line))
            child.wait()
            if not self._stopping.is_set():
                log.error("the intake writer exited (%s); restarting it", child.returncode)
                self._stopping.wait(RESTART_DELAY)

    def stop(self, timeout: float) -> None:
        """Close the child's input (it exits) and wait for it."""
        self._stopping.set()
        child = self._child
        if child is not None and child.stdin is not None:
            child.stdin.close()
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
        if self._watcher is not None:
            self._watcher.join(timeout)
            self._watcher = None
