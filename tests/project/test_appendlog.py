"""The append-only log module the intake's log and the send journal share."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine import appendlog
from engine.appendlog import (
    Liveness,
    Syncer,
    lock_for_life,
    lock_if_dead,
    open_append,
    read_records,
    split_records,
    write_all,
)


def test_records_are_whole_lines_and_a_torn_tail_is_set_apart(tmp_path: Path) -> None:
    assert split_records(b"") == ([], b"")
    assert split_records(b"a\n\nb\n") == ([b"a", b"", b"b"], b"")
    assert split_records(b"a\nb") == ([b"a"], b"b")
    assert split_records(b"torn") == ([], b"torn")
    assert read_records(tmp_path / "missing.log") == ([], b"")


def test_appends_land_in_order(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    fd = open_append(path)
    try:
        write_all(fd, b"one\n")
        write_all(fd, b"two\n" * 10_000)
    finally:
        os.close(fd)
    lines, torn = read_records(path)
    assert lines == [b"one", *[b"two"] * 10_000] and torn == b""
    assert path.stat().st_mode & 0o077 == 0


def test_a_held_lock_is_live_a_released_one_dead_a_gone_one_missing(tmp_path: Path) -> None:
    path = tmp_path / "w.lock"
    owner = open_append(path)
    lock_for_life(owner)
    assert lock_if_dead(path) == (Liveness.LIVE, -1)
    os.close(owner)  # what the kernel does when the owner dies
    liveness, fd = lock_if_dead(path)
    assert liveness == Liveness.DEAD and fd >= 0
    assert lock_if_dead(path) == (Liveness.LIVE, -1)  # we hold it now
    path.unlink()
    os.close(fd)
    assert lock_if_dead(path) == (Liveness.MISSING, -1)


def test_the_syncer_calls_until_stopped() -> None:
    called = threading.Event()
    syncer = Syncer(called.set, 0.001, "test-sync").start()
    assert called.wait(10)
    syncer.stop()
    called.clear()
    assert not called.wait(0.05)


def test_a_file_being_created_is_never_seen_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanner that looks at the instant between creating and locking (two workers of a
    run racing: one opens its journal while the other settles dead workers' journals) must
    not take the new file for a dead process's."""
    path = tmp_path / "worker.journal"
    seen: list[str] = []
    real_lock = appendlog.lock_for_life

    def scan_before_locking(fd: int) -> None:
        if not seen:
            seen.append("scanning")
            liveness, other = appendlog.lock_if_dead(path)
            seen[0] = liveness
            if other >= 0:
                os.close(other)
        real_lock(fd)

    monkeypatch.setattr(appendlog, "lock_for_life", scan_before_locking)
    fd = appendlog.create_locked(path)
    try:
        assert seen == [appendlog.Liveness.MISSING]
        monkeypatch.setattr(appendlog, "lock_for_life", real_lock)
        assert appendlog.lock_if_dead(path) == (appendlog.Liveness.LIVE, -1)
        assert [p.name for p in tmp_path.iterdir()] == ["worker.journal"]
    finally:
        os.close(fd)
