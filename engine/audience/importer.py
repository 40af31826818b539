"""Bulk import of recipients, catalogue items and interactions from CSV or JSON Lines files.

A file is imported all or nothing: it is validated and written inside one transaction, and
the first bad row raises ``ImportFileError`` with nothing from the file committed.

Row numbers in errors are where a user finds the row: in a CSV file the header is row 1, so
the first data row is row 2 (as a spreadsheet numbers them); in a JSON Lines file the row
is the line number. Blank rows and lines are skipped but still counted.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session, SQLModel

from engine.addresses import normalize_address
from engine.audience.checks import RowChecks, UnknownReferences
from engine.db import session_scope, upsert
from engine.errors import ImportFileError
from engine.models import InteractionRow, ItemRow, RecipientRow, as_utc
from engine.types import DEFAULT_INTERACTION_KIND, Interaction, Item

CHUNK_ROWS = 1000
"""Rows per INSERT statement; every chunk of a file still shares one transaction."""

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
"""File extensions the importer reads, and the format each one means."""

MAX_ID_LENGTH = 200

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
# Epoch seconds past this (year 5138) are almost surely milliseconds.
_MAX_EPOCH_SECONDS = 1e11


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: data rows read, rows inserted and existing rows updated.

    ``ignored_columns`` lists the columns an interactions file had that are not stored;
    ``unknown`` counts its rows naming recipients or items that are not imported.
    """

    kind: str
    path: Path
    rows: int
    inserted: int
    updated: int
    ignored_columns: tuple[str, ...] = ()
    unknown: tuple[UnknownReferences, ...] = ()  # interactions naming ids not imported


class _Invalid(Exception):
    """A bad value; the import loop adds the file and row."""

    def __init__(self, column: str | None, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


def _identifier(record: Mapping[str, Any], column: str) -> str:
    value = record.get(column)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # JSON ids like 42 are common and unambiguous
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Invalid(column, f"is empty; every row needs a {column!r}")
    if not isinstance(value, str):
        raise _Invalid(column, f"{value!r} is not a string")
    value = value.strip()  # stray spaces around ids would silently split one user in two
    if len(value) > MAX_ID_LENGTH:
        raise _Invalid(column, f"is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if _CONTROL.search(value):
        raise _Invalid(column, f"{value!r} contains a control character")
    return value


def _email(record: Mapping[str, Any]) -> str:
    value = record.get("email")
    if value is None or value == "":
        raise _Invalid("email", "is empty; every recipient needs an email address")
    if not isinstance(value, str):
        raise _Invalid("email", f"{value!r} is not a string")
    try:
        return normalize_address(value)  # lowercased: one spelling per mailbox
    except ValueError as exc:
        raise _Invalid("email", str(exc)) from None


def _attributes(
    record: Mapping[str, Any], reserved: Iterable[str], from_csv: bool
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    skip = set(reserved)
    for key, value in record.items():
        # CSV cannot say "absent" except with an empty cell; JSON says it with null.
        if key in skip or value is None or (from_csv and value == ""):
            continue
        if isinstance(value, dict | list):
            raise _Invalid(key, "must be a string, number or boolean, not a JSON object or list")
        attributes[key] = csv_scalar(value) if from_csv else value
    return attributes


# Plain decimal numbers only: a leading zero (ZIP codes, phone numbers), a sign other than
# minus, an exponent or more than 15 digits keeps the cell as text.
_CSV_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?")


def csv_scalar(value: Any) -> Any:
    """A CSV cell that spells a plain decimal number, as that number; any other, as it is.

    JSON Lines files say what is a number themselves; CSV cannot, so ``42`` and ``9.5``
    become numbers (audience ranges then compare numerically) and ``0042`` stays text.
    """
    if isinstance(value, str) and _CSV_NUMBER.fullmatch(value):
        return float(value) if "." in value else int(value)
    return value


def _recipient(record: Mapping[str, Any], from_csv: bool) -> dict[str, Any]:
    return {
        "id": _identifier(record, "id"),
        "email": _email(record),
        "attributes": _attributes(record, ("id", "email"), from_csv),
    }


def _item(record: Mapping[str, Any], from_csv: bool) -> dict[str, Any]:
    url = record.get("url")
    if url is not None and url != "":
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Invalid("url", f"{url!r} is not an http(s) URL")
        if re.search(r"\s", url) or _CONTROL.search(url):
            raise _Invalid("url", f"{url!r} contains whitespace")
    return {"id": _identifier(record, "id"), "attributes": _attributes(record, ("id",), from_csv)}


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > _MAX_EPOCH_SECONDS:
            raise _Invalid("timestamp", f"{value!r} is not a unix time in seconds")
        return datetime.fromtimestamp(value, UTC)
    if value is None or value == "":
        raise _Invalid("timestamp", "is empty; every interaction needs a timestamp")
    try:
        # Without a time zone a timestamp is taken as UTC, the storage convention.
        return as_utc(datetime.fromisoformat(str(value).strip()))
    except ValueError:
        reason = f"{value!r} is neither an ISO 8601 date-time nor a unix time"
        raise _Invalid("timestamp", reason) from None


def _interaction(record: Mapping[str, Any], from_csv: bool) -> dict[str, Any]:
    raw = record.get("value")
    if raw is None or raw == "":
        value = 1.0
    else:
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            raise _Invalid("value", f"{raw!r} is not a number") from None
        if not math.isfinite(value):
            raise _Invalid("value", f"{raw!r} is not a finite number")
    return {
        "user_id": _identifier(record, "user_id"),
        "item_id": _identifier(record, "item_id"),
        "timestamp": _timestamp(record.get("timestamp")),
        "value": value,
        "kind": _kind(record.get("kind")),
    }


def _kind(value: Any) -> str:
    """An interaction's kind (``view``, ``purchase``...); empty means the default kind."""
    if value is None or value == "":
        return DEFAULT_INTERACTION_KIND
    if not isinstance(value, str) or not _KIND.fullmatch(value.strip()):
        raise _Invalid("kind", f"{value!r} is not a kind like 'view' or 'purchase'")
    return value.strip()


@dataclass(frozen=True)
class _Kind:
    model: type[SQLModel]
    required: tuple[str, ...]
    known: tuple[str, ...] | None  # None: every other column is an attribute
    convert: Callable[[Mapping[str, Any], bool], dict[str, Any]]
    keyed: bool  # rows have an ``id``: upserted, and an id twice in one file is an error


_EVENT = ("user_id", "item_id", "timestamp", "value", "kind")
_KINDS = {
    "recipients": _Kind(RecipientRow, ("id", "email"), None, _recipient, True),
    "items": _Kind(ItemRow, ("id",), None, _item, True),
    "interactions": _Kind(InteractionRow, _EVENT[:3], _EVENT, _interaction, False),
}

Records = Iterator[tuple[int, dict[str, Any]]]


def _resave(encoding: str) -> str:
    """What an undecodable file's error says to do (tailormail reads UTF-8 only)."""
    return (
        ': save the file as UTF-8 (a spreadsheet\'s "CSV UTF-8"), or convert it, e.g. with '
        f"iconv -f {encoding} -t utf-8 FILE > FILE.utf8.csv"
    )


def _lines(handle: IO[bytes], name: str, row_of: Callable[[int], int]) -> Iterator[str]:
    """Decoded lines; ``row_of`` maps a line number to the row an error should name."""
    # Decoding line by line (b"\n" never occurs inside a UTF-8 sequence) keeps memory flat.
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            utf16 = number == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff")
            found = "is UTF-16, not UTF-8" if utf16 else "is not valid UTF-8"
            resave = _resave("utf-16" if utf16 else "latin1")
            raise ImportFileError(name, row_of(number), None, found + resave) from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def _csv_records(handle: IO[bytes], name: str, required: tuple[str, ...]) -> Records:
    row = 1
    reader = csv.reader(_lines(handle, name, lambda _line: row), strict=True)
    try:
        header = [column.strip() for column in next(reader, [])]
        if not any(header):
            raise ImportFileError(name, 1, None, f"has no header; expected {', '.join(required)}")
        for position, column in enumerate(header, start=1):
            if not column:
                raise ImportFileError(name, 1, None, f"header column {position} has no name")
            if header.count(column) > 1:
                raise ImportFileError(name, 1, column, "appears twice in the header")
        for column in required:
            if column not in header:
                reason = f"missing from the header (it has: {', '.join(header)})"
                raise ImportFileError(name, 1, column, f"required column {reason}")
        while True:
            row += 1
            fields = next(reader, None)
            if fields is None:
                return
            if not fields:
                continue
            if len(fields) != len(header):
                reason = f"has {len(fields)} fields but the header has {len(header)}"
                raise ImportFileError(name, row, None, reason)
            yield row, dict(zip(header, fields, strict=True))
    except csv.Error as exc:
        raise ImportFileError(name, row, None, f"is not valid CSV ({exc})") from None


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not a number JSON allows")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object that names a key twice is an error (``json`` would keep the last)."""
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"the key {key!r} appears twice in one object")
        record[key] = value
    return record


def _jsonl_records(handle: IO[bytes], name: str, required: tuple[str, ...]) -> Records:
    for row, text in enumerate(_lines(handle, name, lambda line: line), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(
                text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys
            )
        except ValueError as exc:
            raise ImportFileError(name, row, None, f"is not valid JSON ({exc})") from None
        except RecursionError:
            reason = "is nested too deeply to be a row (objects and lists inside each other)"
            raise ImportFileError(name, row, None, reason) from None
        if not isinstance(record, dict):
            reason = f"is a JSON {type(record).__name__}, not an object"
            raise ImportFileError(name, row, None, reason)
        for column in required:
            if column not in record:
                raise ImportFileError(name, row, column, "required key is missing")
        yield row, record


def _table(model: type[SQLModel]) -> Table:
    return SQLModel.metadata.tables[str(model.__tablename__)]


def _write(session: Session, kind: _Kind, chunk: list[dict[str, Any]], checks: RowChecks) -> int:
    """Write one chunk; return how many of its rows already existed (were updated)."""
    table = _table(kind.model)
    if not kind.keyed:
        session.execute(insert(table), chunk)
        return 0
    if kind.model is RecipientRow:
        checks.check_addresses(session, table, chunk)
    ids = [values["id"] for values in chunk]
    existing = session.execute(select(table.c.id).where(table.c.id.in_(ids))).all()
    upsert(session, kind.model, chunk, key=["id"])
    return len(existing)


def _validated(
    records: Records, kind: _Kind, fmt: str, ignored: set[str], checks: RowChecks
) -> Iterator[dict[str, Any]]:
    """Convert each record to column values, noting columns an interactions file drops."""
    known = set(kind.known or ())
    for row, record in records:
        try:
            values = kind.convert(record, fmt == "csv")
        except _Invalid as exc:
            raise ImportFileError(checks.name, row, exc.column, exc.reason) from None
        checks.see(row, values)
        if kind.known is not None:
            ignored.update(record.keys() - known)
        yield values


def _chunks(values: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(islice(values, size)):
        yield chunk


def import_file(
    db: SAEngine,
    kind: str,
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
    strict: bool = False,
) -> ImportSummary:
    """Import a ``recipients``, ``items`` or ``interactions`` file, all or nothing.

    The format follows the extension (``.csv``, ``.jsonl`` or ``.ndjson``). Recipients and
    items are upserted by ``id``; interactions are appended, and those naming recipients
    or items not imported are counted in the summary (``strict``: the file is rejected).
    ``progress`` is called with the number of data rows written so far after every chunk.
    Raises ``ImportFileError`` naming the file, row and column of the first bad row;
    nothing is then committed.
    """
    path = Path(path)
    name = str(path)
    spec = _KINDS.get(kind)
    if spec is None:
        raise ImportFileError(name, None, None, f"unknown kind {kind!r}; use {', '.join(_KINDS)}")
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        usable = ", ".join(EXTENSIONS)
        raise ImportFileError(name, None, None, f"has an unknown extension; use one of {usable}")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportFileError(name, None, None, f"cannot be opened ({exc.strerror})") from None
    read = _csv_records if fmt == "csv" else _jsonl_records
    ignored: set[str] = set()
    rows = updated = 0
    checks = RowChecks(name)
    unknown: list[UnknownReferences] = []
    with handle, session_scope(db) as session:
        records = _validated(read(handle, name, spec.required), spec, fmt, ignored, checks)
        for chunk in _chunks(records, CHUNK_ROWS):
            updated += _write(session, spec, chunk, checks)
            rows += len(chunk)
            if progress is not None:
                progress(rows)
        if spec.model is InteractionRow:
            unknown = checks.unknown(session, _table(RecipientRow), _table(ItemRow), strict=strict)
    return ImportSummary(
        kind, path, rows, rows - updated, updated, tuple(sorted(ignored)), tuple(unknown)
    )


def load_interactions(db: SAEngine, since: datetime | None = None) -> list[Interaction]:
    """Every stored interaction (at or after ``since`` if given), oldest first."""
    table = _table(InteractionRow)
    stmt = select(table.c.user_id, table.c.item_id, table.c.timestamp, table.c.value, table.c.kind)
    if since is not None:
        stmt = stmt.where(table.c.timestamp >= as_utc(since))
    with Session(db) as session:
        result = session.execute(stmt.order_by(table.c.timestamp, table.c.id)).all()
    return [
        Interaction(user, item, when, float(value), kind)
        for user, item, when, value, kind in result
    ]


def load_items(db: SAEngine) -> list[Item]:
    """The whole catalogue, ordered by item id."""
    table = _table(ItemRow)
    with Session(db) as session:
        result = session.execute(select(table.c.id, table.c.attributes).order_by(table.c.id))
        return [Item(item_id, dict(attributes or {})) for item_id, attributes in result]
