"""An intake log written before the shared append-only module is still read and stored.

The fixture is a dead server's spool as today's format writes it, byte for byte: one JSON
record per line (short keys, ``encode``), segments ``<tag>.<n>.log`` beside an unlocked
``<tag>.lock``, and a last line torn by a power cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.project import Project
from sqlmodel import Session, col, select

from engine.app import Engine
from engine.feedback.eventlog import EventLog, Tail, read_lines
from engine.feedback.intake import REJECTED_FILE, encode, spool_dir, store_orphans
from engine.models import EventRow
from engine.types import EventType

TAG = "4242-0badcafe"
SEGMENTS = [
    b'{"q":1,"k":"log:4242-0badcafe:1","t":"click","ts":1700000000.5,"s":1,'
    b'"u":"https://shop.example/1","b":false}\n'
    b'{"q":2,"k":"log:4242-0badcafe:2","t":"open","ts":1700000001.0,"s":2,"b":false}\n',
    b'{"q":3,"k":"log:4242-0badcafe:3","t":"click","ts":1700000002.0,"s":3,'
    b'"u":"https://shop.example/3","a":"Mozilla/5.0","b":false,"m":false}\n'
    b'{"q":4,"k":"log:4242-0badcafe:4","t":"cli',  # torn by a power cut
]


@pytest.fixture
def engine(sqlite_project: Project) -> Iterator[Engine]:
    with sqlite_project.engine() as built:
        yield built


def test_todays_encoding_is_the_fixtures() -> None:
    fields = {"send_id": 1, "url": "https://shop.example/1", "bot": False}
    line = encode(1, "log:4242-0badcafe:1", EventType.CLICK, 1700000000.5, fields)
    assert line == SEGMENTS[0].split(b"\n")[0] + b"\n"


def test_an_old_spool_is_adopted_stored_and_removed(engine: Engine) -> None:
    directory = spool_dir(engine)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for number, data in enumerate(SEGMENTS):
        (directory / f"{TAG}.{number:06d}.log").write_bytes(data)
    (directory / f"{TAG}.lock").write_bytes(b"")
    assert (
        read_lines(directory / f"{TAG}.000001.log")[-1]
        == b'{"q":4,"k":"log:4242-0badcafe:4","t":"cli'
    )
    assert store_orphans(engine) == 4  # lines read: three events and the torn one
    with Session(engine.db) as session:
        stored = session.exec(select(EventRow).order_by(col(EventRow.send_id))).all()
        assert [(e.send_id, e.type, e.url) for e in stored] == [
            (1, "click", "https://shop.example/1"),
            (2, "open", None),
            (3, "click", "https://shop.example/3"),
        ]
    assert [p.name for p in directory.iterdir()] == [REJECTED_FILE]  # the torn line


def test_a_log_written_now_has_the_same_bytes(tmp_path: Path) -> None:
    log = EventLog(tmp_path, segment_bytes=150).open()
    lines = [line + b"\n" for data in SEGMENTS for line in data.split(b"\n")[:-1]]
    for line in lines:
        log.append(line)
    tail = Tail(log)
    assert tail.read() == [line.rstrip(b"\n") for line in lines]
    log.close(discard=False)
    written = b"".join(p.read_bytes() for p in sorted(tmp_path.glob(f"{log.tag}.*.log")))
    assert written == b"".join(lines)
    assert len(list(tmp_path.glob(f"{log.tag}.*.log"))) > 1  # rotated by size
