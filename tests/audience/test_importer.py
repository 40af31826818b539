"""The importer: valid files of every kind and format, all-or-nothing on a bad row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.engine import Engine

from engine.audience.importer import CHUNK_ROWS, import_file, load_interactions, load_items
from engine.db import make_db
from engine.errors import ImportFileError

# --- database fixture: an empty database on each backend (conftest's db_url) ----------


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """An empty tailormail database on SQLite or PostgreSQL."""
    engine = make_db(db_url)
    yield engine
    engine.dispose()


# --- helpers -----------------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def jsonl(*records: Any) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def table(db: Engine, name: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        result = conn.execute(sqlalchemy.text(f"SELECT * FROM {name} ORDER BY 1"))
        return [dict(row._mapping) for row in result]


def attributes(row: dict[str, Any]) -> dict[str, Any]:
    # SQLite hands JSON back as text through a raw SELECT; PostgreSQL as a dict.
    value = row["attributes"]
    return json.loads(value) if isinstance(value, str) else dict(value)


# --- valid files -------------------------------------------------------------------------


def test_recipients_csv(db: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "people.csv",
        "id,email,segment,age\n"
        "u1,Ann@Example.COM,news,41\n"
        " u2 , bob@example.org ,,\n"
        '\n"u3","c.d+tag@sub.example.net","sports, weekly",7\n',
    )
    progress: list[int] = []
    summary = import_file(db, "recipients", path, progress=progress.append)
    assert (summary.kind, summary.rows, summary.inserted, summary.updated) == (
        "recipients",
        3,
        3,
        0,
    )
    assert progress == [3]
    rows = {row["id"]: row for row in table(db, "recipients")}
    assert rows["u1"]["email"] == "ann@example.com"  # one spelling per mailbox
    assert attributes(rows["u1"]) == {"segment": "news", "age": 41}
    assert rows["u2"]["email"] == "bob@example.org"
    assert attributes(rows["u2"]) == {}
    assert attributes(rows["u3"]) == {"segment": "sports, weekly", "age": 7}


def test_recipients_jsonl(db: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "people.jsonl",
        jsonl(
            {"id": "u1", "email": "a@example.com", "age": 41, "vip": True, "note": None},
            {"id": 7, "email": "b@example.com", "score": 0.5, "name": ""},
        )
        + "\n",
    )
    summary = import_file(db, "recipients", path)
    assert summary.rows == summary.inserted == 2
    rows = {row["id"]: row for row in table(db, "recipients")}
    assert attributes(rows["u1"]) == {"age": 41, "vip": True}
    assert attributes(rows["7"]) == {"score": 0.5, "name": ""}


def test_items_csv_and_ndjson(db: Engine, tmp_path: Path) -> None:
    csv_path = write(
        tmp_path,
        "items.csv",
        "\ufeffid,title,url,category\ni1,Shoes,https://shop.example/i1,wear\ni2,Hat,,\n",
    )
    assert import_file(db, "items", csv_path).inserted == 2
    ndjson = write(tmp_path, "more.ndjson", jsonl({"id": "i3", "url": "http://x.example/3"}))
    assert import_file(db, "items", ndjson).inserted == 1
    items = {item.item_id: item for item in load_items(db)}
    assert list(items) == ["i1", "i2", "i3"]
    assert items["i1"].attributes == {
        "title": "Shoes",
        "url": "https://shop.example/i1",
        "category": "wear",
    }
    assert items["i2"].attributes == {"title": "Hat"}


def test_interactions_csv_and_jsonl(db: Engine, tmp_path: Path) -> None:
    csv_path = write(
        tmp_path,
        "events.csv",
        "user_id,item_id,timestamp,value,event_type\n"
        "u1,i1,2024-03-01T12:00:00+02:00,2.5,purchase\n"
        "u1,i2,2024-03-01 11:00:00,,view\n"
        "u2,i1,1709294400,1,view\n",
    )
    summary = import_file(db, "interactions", csv_path)
    assert (summary.rows, summary.inserted, summary.updated) == (3, 3, 0)
    assert summary.ignored_columns == ("event_type",)
    json_path = write(
        tmp_path,
        "events.jsonl",
        jsonl(
            {"user_id": "u3", "item_id": "i2", "timestamp": 1709294400.5},
            {"user_id": "u3", "item_id": "i3", "timestamp": "2024-03-02T00:00:00Z", "value": 3},
        ),
    )
    assert import_file(db, "interactions", json_path).inserted == 2
    loaded = load_interactions(db)
    assert [(i.user_id, i.item_id, i.timestamp, i.value) for i in loaded] == [
        ("u1", "i1", datetime(2024, 3, 1, 10, 0, tzinfo=UTC), 2.5),
        ("u1", "i2", datetime(2024, 3, 1, 11, 0, tzinfo=UTC), 1.0),
        ("u2", "i1", datetime(2024, 3, 1, 12, 0, tzinfo=UTC), 1.0),
        ("u3", "i2", datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=UTC), 1.0),
        ("u3", "i3", datetime(2024, 3, 2, 0, 0, tzinfo=UTC), 3.0),
    ]
    since = datetime(2024, 3, 1, 13, 0, tzinfo=UTC) - timedelta(hours=1)
    assert [i.item_id for i in load_interactions(db, since=since)] == ["i1", "i2", "i3"]


def test_interactions_naming_unknown_ids_are_counted_and_rejected_when_strict(
    db: Engine, tmp_path: Path
) -> None:
    """Issue 5 item 14: the import says how many interactions name nobody it knows."""
    import_file(db, "recipients", write(tmp_path, "p.csv", "id,email\nu1,a@example.com\n"))
    import_file(db, "items", write(tmp_path, "i.csv", "id\ni1\n"))
    events = write(
        tmp_path,
        "e.csv",
        "user_id,item_id,timestamp\n"
        "u1,i1,1709294400\nghost,i1,1709294400\nghost,i9,1709294400\nu1,i9,1709294400\n",
    )
    summary = import_file(db, "interactions", events)
    assert summary.inserted == 4  # kept: a recipe may learn from people who get no mail
    described = [unknown.describe() for unknown in summary.unknown]
    assert described == [
        "2 interactions name recipients that are not imported (ghost)",
        "2 interactions name items that are not imported (i9)",
    ]
    with pytest.raises(ImportFileError) as caught:
        import_file(db, "interactions", events, strict=True)
    assert (caught.value.row, caught.value.column) == (3, "user_id")
    assert "names recipient 'ghost', which is not imported" in caught.value.reason
    assert len(load_interactions(db)) == 4  # the strict import committed nothing


def test_reimport_updates_existing_recipients(db: Engine, tmp_path: Path) -> None:
    first = write(tmp_path, "a.csv", "id,email,segment\nu1,a@example.com,news\nu2,b@x.io,x\n")
    import_file(db, "recipients", first)
    created = {row["id"]: row["created_at"] for row in table(db, "recipients")}
    second = write(tmp_path, "b.csv", "id,email,plan\nu1,new@example.com,pro\nu3,c@x.io,free\n")
    summary = import_file(db, "recipients", second)
    assert (summary.rows, summary.inserted, summary.updated) == (2, 1, 1)
    rows = {row["id"]: row for row in table(db, "recipients")}
    assert sorted(rows) == ["u1", "u2", "u3"]
    assert rows["u1"]["email"] == "new@example.com"
    assert attributes(rows["u1"]) == {"plan": "pro"}  # the file replaces the attributes
    assert rows["u1"]["created_at"] == created["u1"]


def test_many_rows_are_written_in_chunks(db: Engine, tmp_path: Path) -> None:
    count = CHUNK_ROWS * 2 + 500
    lines = "".join(f"u{n},i{n % 7},{1_700_000_000 + n}\n" for n in range(count))
    path = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n" + lines)
    progress: list[int] = []
    assert import_file(db, "interactions", path, progress=progress.append).rows == count
    assert progress == [CHUNK_ROWS, CHUNK_ROWS * 2, count]
    assert len(load_interactions(db)) == count


# --- bad files: the right row and column, and nothing committed -------------------------

GOOD_PEOPLE = "id,email\nu1,a@example.com\nu2,b@example.com\n"
GOOD_ITEMS = "id,title\ni1,Old title\n"
GOOD_EVENTS = "user_id,item_id,timestamp\nu1,i1,2024-01-01T00:00:00Z\n"
EV = "user_id,item_id,timestamp"
LATIN_1 = "id,email\nu1,José@x.com\n".encode("latin-1")
UTF_16 = "id,email\nu1,z@x.com\n".encode("utf-16")

BAD_FILES = [
    # kind, file name, content, row, column, words in the reason
    ("recipients", "p.csv", "id,email\nu1,z@example.com\nu9,not-an-email\n", 3, "email", "not an"),
    ("recipients", "p.csv", "id,email\nu1,z@example.com\nu9,\n", 3, "email", "empty"),
    ("recipients", "p.csv", "id,email\n,z@example.com\n", 2, "id", "empty"),
    ("recipients", "p.csv", "id,email\nu1,a b@x.com\n", 2, "email", "not an email"),
    ("recipients", "p.csv", f"id,email\n{'x' * 201},a@x.com\n", 2, "id", "limit is 200"),
    ("recipients", "p.csv", "id,email\nu1,z@x.com\nu7,y@x.com\nu1,w@x.com\n", 4, "id", "row 2"),
    ("recipients", "p.csv", "id,email\nu1,z@x.com\nu2,y@x.com,extra\n", 3, None, "3 fields"),
    ("recipients", "p.csv", "id,mail\nu1,z@x.com\n", 1, "email", "header"),
    ("recipients", "p.csv", 'id,email\nu1,"z@x.com\n', 2, None, "CSV"),
    ("recipients", "p.csv", b"id,email\nu1,z@x.com\nu2,\xff@x.com\n", 3, None, "UTF-8"),
    ("recipients", "p.csv", LATIN_1, 2, None, "save the file as UTF-8"),
    ("recipients", "p.csv", UTF_16, 1, None, "is UTF-16, not UTF-8"),
    ("recipients", "p.jsonl", '{"id": "u1", "email": "z@x.com"}\n["u2"]\n', 2, None, "object"),
    ("recipients", "p.jsonl", '{"id": "u1", "email": "z@x.com"}\n{"id": \n', 2, None, "JSON"),
    ("recipients", "p.jsonl", '\n{"id": "u1"}\n', 2, "email", "missing"),
    ("recipients", "p.jsonl", '{"id": "u1", "email": "z@x.com", "a": [1]}\n', 1, "a", "list"),
    ("recipients", "p.jsonl", '{"id": "u1", "email": "z@x.com", "a": NaN}\n', 1, None, "NaN"),
    ("items", "i.csv", "id,url\ni1,https://ok.example\ni2,javascript:alert(1)\n", 3, "url", "http"),
    ("items", "i.jsonl", '{"id": "i1"}\n{"id": "i1"}\n', 2, "id", "twice"),
    ("interactions", "e.csv", f"{EV}\nu1,i1,yesterday\n", 2, "timestamp", "ISO 8601"),
    ("interactions", "e.csv", f"{EV}\nu1,i1,1709294400000\n", 2, "timestamp", "seconds"),
    ("interactions", "e.csv", f"{EV},value\nu,i,2024-01-01,lots\n", 2, "value", "number"),
    ("interactions", "e.csv", f"{EV}\nu1,,2024-01-01\n", 2, "item_id", "empty"),
    ("interactions", "e.jsonl", '{"user_id": "u", "item_id": "i"}\n', 1, "timestamp", "missing"),
    ("interactions", "e.jsonl", jsonl({"user_id": "u", "item_id": "i", "timestamp": True}), 1,
     "timestamp", "neither"),
    # issue 5 item 13: one address, one recipient; no address that needs SMTPUTF8
    ("recipients", "p.csv", "id,email\nu7,Kim@X.com\nu8,kim@x.COM\n", 3, "email", "row 2"),
    ("recipients", "p.csv", "id,email\nu9,A@Example.com\n", 2, "email", "recipient 'u1'"),
    ("recipients", "p.csv", "id,email\nu9,jörg@example.com\n", 2, "email", "SMTPUTF8"),
    ("recipients", "p.csv", "id,email\nu9,a@-bad-.com\n", 2, "email", "not an email"),
    # issue 5 items 4 and 14: a duplicate key, a line nested 100,000 deep
    ("recipients", "p.jsonl", '{"id": "u9", "email": "q@x.com", "id": "u8"}\n', 1, None,
     "'id' appears twice"),
    ("items", "i.jsonl", '{"id": "i9", "a": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 1, None,
     "nested too deeply"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "name", "content", "row", "column", "words"),
    BAD_FILES,
    ids=[f"{n:02d}-{case[1]}-{case[4]}" for n, case in enumerate(BAD_FILES)],
)
def test_bad_row_names_row_and_column_and_commits_nothing(
    db: Engine,
    tmp_path: Path,
    kind: str,
    name: str,
    content: str | bytes,
    row: int,
    column: str | None,
    words: str,
) -> None:
    import_file(db, "recipients", write(tmp_path, "good.csv", GOOD_PEOPLE))
    import_file(db, "items", write(tmp_path, "good-items.csv", GOOD_ITEMS))
    import_file(db, "interactions", write(tmp_path, "good-events.csv", GOOD_EVENTS))
    before = {name: table(db, name) for name in ("recipients", "items", "interactions")}
    path = write(tmp_path, name, content)
    with pytest.raises(ImportFileError) as caught:
        import_file(db, kind, path)
    error = caught.value
    assert (error.path, error.row, error.column) == (str(path), row, column)
    assert words in error.reason
    assert {name: table(db, name) for name in before} == before


def test_csv_rows_are_records_so_quoted_newlines_do_not_shift_them(
    db: Engine, tmp_path: Path
) -> None:
    content = 'id,title\r\ni1,"two\r\nlines"\r\n\r\ni2,ok\r\ni3,"x",y\r\n'
    path = write(tmp_path, "items.csv", content)
    with pytest.raises(ImportFileError) as caught:
        import_file(db, "items", path)
    assert caught.value.row == 5  # header, i1, the blank row, i2, then the ragged i3
    path.write_text(content.replace(',"x",y', ",x"), encoding="utf-8")
    import_file(db, "items", path)
    assert load_items(db)[0].attributes == {"title": "two\r\nlines"}


def test_bad_row_after_several_chunks_rolls_back_every_chunk(db: Engine, tmp_path: Path) -> None:
    count = CHUNK_ROWS * 2 + 10
    lines = "".join(f"u{n},u{n}@example.com\n" for n in range(count))
    path = write(tmp_path, "big.csv", "id,email\n" + lines + "bad,nope\n")
    with pytest.raises(ImportFileError) as caught:
        import_file(db, "recipients", path)
    assert caught.value.row == count + 2
    assert table(db, "recipients") == []


def test_reimport_with_a_bad_row_keeps_the_old_values(db: Engine, tmp_path: Path) -> None:
    import_file(db, "items", write(tmp_path, "a.csv", GOOD_ITEMS))
    bad = write(tmp_path, "b.csv", "id,title,url\ni1,New title,\ni2,Other,ftp://x.example\n")
    with pytest.raises(ImportFileError):
        import_file(db, "items", bad)
    assert [item.attributes for item in load_items(db)] == [{"title": "Old title"}]


def test_error_message_reads_like_a_sentence(db: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", "id,email\nu1,a@example.com\nu2,not-an-email\n")
    with pytest.raises(ImportFileError) as caught:
        import_file(db, "recipients", path)
    expected = f"{path}, row 3, column 'email': 'not-an-email' is not an email address"
    assert str(caught.value) == expected


def test_unknown_extension_says_which_work(db: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "people.xlsx", "")
    with pytest.raises(ImportFileError) as caught:
        import_file(db, "recipients", path)
    assert str(path) in str(caught.value)
    assert ".csv" in str(caught.value) and ".jsonl" in str(caught.value)


def test_unknown_kind_and_missing_file(db: Engine, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="unknown kind 'users'"):
        import_file(db, "users", tmp_path / "x.csv")
    with pytest.raises(ImportFileError, match="cannot be opened"):
        import_file(db, "items", tmp_path / "missing.csv")
