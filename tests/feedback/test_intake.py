"""The click intake's local log: every recorded event reaches the database exactly once,
whatever happens to the process that wrote it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.project import Project
from sqlmodel import Session, select

from engine.app import Engine
from engine.feedback.intake import REJECTED_FILE, Intake, spool_dir, store_orphans
from engine.feedback.reward_job import join_rewards
from engine.models import EventRow
from engine.types import EventType

# A process that writes ``count`` records to its own log, then dies by SIGKILL ("kill")
# or stays alive, holding its log, until its standard input closes ("live").
WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from engine.types import EventType
    from engine.feedback.eventlog import EventLog
    from engine.feedback.intake import encode

    directory, count, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    log = EventLog(directory, segment_bytes=4096).open()
    for seq in range(1, count + 1):
        fields = {"send_id": seq, "url": f"https://shop.example/{seq}", "bot": False}
        log.append(encode(seq, f"log:{log.tag}:{seq}", EventType.CLICK, 1.7e9, fields))
    print(log.tag, flush=True)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()
    """
)


@pytest.fixture
def engine(project: Project) -> Iterator[Engine]:
    with project.engine() as built:
        yield built


def clicks(engine: Engine) -> list[EventRow]:
    with Session(engine.db) as session:
        return list(session.exec(select(EventRow).where(EventRow.type == "click")).all())


def writer(directory: Path, count: int, mode: str) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), str(count), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    return child, child.stdout.readline().strip()


def test_every_event_is_stored_once_across_segments_and_the_log_is_removed(
    engine: Engine,
) -> None:
    intake = Intake(engine, segment_bytes=2048).start()  # a new segment every ~10 events
    for send_id in range(1, 301):
        intake.record(EventType.CLICK, send_id, url=f"https://shop.example/{send_id}", bot=False)
    assert intake.drain(60)
    assert intake.pending == 0
    stored = clicks(engine)
    assert sorted(e.send_id or 0 for e in stored) == list(range(1, 301))
    assert {e.url for e in stored if e.send_id == 7} == {"https://shop.example/7"}
    intake.stop()
    assert list(spool_dir(engine).iterdir()) == []  # stored segments and the lock are gone


def test_a_killed_processes_log_is_adopted_and_a_live_ones_is_left_alone(
    engine: Engine,
) -> None:
    directory = spool_dir(engine)
    live, live_tag = writer(directory, 5, "live")
    dead, dead_tag = writer(directory, 120, "kill")  # several segments, never closed
    try:
        assert dead.wait(30) == -9
        assert len(list(directory.glob(f"{dead_tag}.*.log"))) > 1
        assert store_orphans(engine) == 120
        assert sorted(e.send_id or 0 for e in clicks(engine)) == list(range(1, 121))
        assert list(directory.glob(f"{dead_tag}.*")) == []
        assert list(directory.glob(f"{live_tag}.*.log")) != []  # its writer is alive
        assert store_orphans(engine) == 0  # and a second pass stores nothing twice
    finally:
        live.communicate("", timeout=30)
    # The live writer ended without storing: its log is an orphan now, adopted by the
    # reward job like any other.
    assert join_rewards(engine, learn=False).replayed == 5
    assert len(clicks(engine)) == 125


def test_a_line_nobody_can_read_is_kept_aside_and_the_rest_is_stored(engine: Engine) -> None:
    directory = spool_dir(engine)
    dead, tag = writer(directory, 3, "kill")
    dead.wait(30)
    [segment] = directory.glob(f"{tag}.*.log")
    with segment.open("ab") as handle:
        handle.write(b'{"q": 4, "torn": tru')  # what a power cut mid-write could leave
    assert store_orphans(engine) == 4  # lines read; three of them were events
    assert len(clicks(engine)) == 3
    [kept] = [json.loads(line) for line in (directory / REJECTED_FILE).read_text().splitlines()]
    assert kept["line"] == '{"q": 4, "torn": tru' and kept["why"].startswith("unreadable")
    # Issue 5 item 15: whatever the spool holds is readable by its owner only.
    for path in (directory, *directory.iterdir()):
        assert path.stat().st_mode & 0o077 == 0, path


def test_a_stopped_servers_log_survives_a_replay_while_the_database_is_down(
    engine: Engine,
) -> None:
    from sqlalchemy import create_engine

    directory = spool_dir(engine)
    dead, tag = writer(directory, 10, "kill")
    assert dead.wait(30) == -9
    real = engine.db
    # A database that refuses connections (nothing listens on port 1).
    engine.db = create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/down")
    try:
        assert store_orphans(engine) == 0  # nothing stored, and nothing dropped
    finally:
        engine.db.dispose()
        engine.db = real
    assert list(directory.glob(f"{tag}.*.log")) != []
    assert store_orphans(engine) == 10  # the database is back: every event arrives
    assert sorted(e.send_id or 0 for e in clicks(engine)) == list(range(1, 11))
