"""A database that cannot be used is one line naming the URL and the fix (issue 5 item 4),
and the files a project creates are readable by their owner only (item 15)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from engine.db import make_db
from engine.errors import DatabaseError


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgres://me@127.0.0.1/shop", "write 'postgresql://' instead"),
        ("not a url", "is not a database URL"),
        ("oracle+nope://x/y", "unknown kind of database 'oracle+nope'"),
        ("mysql+pymysql://me@127.0.0.1/shop", "its driver (Python module 'pymysql')"),
    ],
)
def test_a_url_that_cannot_work_is_named(url: str, words: str) -> None:
    with pytest.raises(DatabaseError) as caught:
        make_db(url)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_postgres_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # import psycopg2 now fails
    with pytest.raises(DatabaseError, match=r"pip install 'tailormail\[postgres\]'"):
        make_db("postgresql+psycopg2://me@127.0.0.1/shop")


def test_an_unreachable_server_is_one_line_with_the_password_hidden() -> None:
    url = f"postgresql+psycopg2://me:hunter2@127.0.0.1:{closed_port()}/shop"
    with pytest.raises(DatabaseError) as caught:
        make_db(url)
    message = str(caught.value)
    assert message.startswith("cannot open the database postgresql+psycopg2://me:***@127.0.0.1")
    assert "Connection refused" in message
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("missing/dir/x.db", "directory {root}/missing/dir does not exist"),
        ("a-file/x.db", "directory {root}/a-file does not exist"),
        ("a-dir", "{root}/a-dir is a directory"),
    ],
)
def test_an_sqlite_path_that_cannot_hold_a_database_is_named(
    tmp_path: Path, where: str, words: str
) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(DatabaseError, match=words.format(root=tmp_path)):
        make_db(f"sqlite:///{tmp_path / where}")


def test_the_sqlite_database_and_its_journal_are_private(tmp_path: Path) -> None:
    db = make_db(f"sqlite:///{tmp_path / 'shop.db'}")
    try:
        with db.connect() as connection:  # WAL mode: -wal and -shm exist while connected
            connection.exec_driver_sql("CREATE TABLE t (x)")
            files = sorted(tmp_path.iterdir())
            assert {p.name for p in files} >= {"shop.db", "shop.db-wal", "shop.db-shm"}
            for path in files:
                assert path.stat().st_mode & 0o077 == 0, path
    finally:
        db.dispose()
