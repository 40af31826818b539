"""The files tailormail writes that hold people, and erasing one person from them.

Outside the database a person can be in: the outbox's ``.eml`` files (their own emails, and
``send --test-to`` copies rendered for them), ``preview`` files, ``export -o`` files, the
tracking intake's ``spool/rejected.jsonl`` and the hand-over journals of workers that died
(an outcome line may quote an SMTP answer naming the address). Writers register what they
write in ``personal_files`` (``note``), so ``forget`` finds it wherever it went and whatever
backend is configured now; the default folders are scanned too, for files written before.

How a file is found to hold the person: a preview or test copy by its ``holder`` (the keyed
hash of the address it was rendered for: its text names them only by their name); an
``.eml`` by its decoded headers and parts; a line of a JSONL file (an export, the rejected
records) by their address, recipient id, decision id or send id.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import html
import json
import logging
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col

from engine.db import session_scope, upsert
from engine.models import PersonalFileRow, utcnow

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.types import SendResult

log = logging.getLogger(__name__)

PREVIEW, TEST_COPY, EXPORT, OUTBOX = "preview", "test_copy", "export", "outbox"
_MAX_PATH = 1024  # the column's size; a longer path is not registered (and logged)
_SEND_ID = re.compile(rb'(?:\\"s\\":|send_id=)(\d+)')  # in a rejected intake record


@runtime_checkable
class KeepsCopies(Protocol):
    """A delivery backend that keeps a copy of each message where tailormail can reach it
    (the ``outbox``): ``copy_path`` is the file of one send's result, or None."""

    def copy_path(self, result: SendResult) -> Path | None:
        """The file holding the message ``result`` is about, if this backend kept one."""


@dataclass(frozen=True)
class Person:
    """What names one person in files (addresses lowercased; holders: their keyed hashes)."""

    addresses: tuple[str, ...]
    recipient_ids: tuple[str, ...] = ()
    decision_ids: tuple[str, ...] = ()
    send_ids: tuple[int, ...] = ()
    holders: tuple[str, ...] = ()

    def spellings(self) -> list[bytes]:
        """The lowercased byte forms the address takes in files: raw, JSON, HTML, URL."""
        forms: set[str] = set()
        for address in self.addresses:
            forms |= {address, json.dumps(address)[1:-1], html.escape(address)}
            forms |= {urllib.parse.quote(address), urllib.parse.quote_plus(address)}
        return sorted({f.lower().encode() for f in forms if f})

    def named_in(self, data: bytes) -> bool:
        """Whether ``data`` (a line, a file) names this person."""
        lowered = data.lower()
        if any(spelling in lowered for spelling in self.spellings()):
            return True
        quoted = [json.dumps(i).encode() for i in (*self.recipient_ids, *self.decision_ids)]
        if any(q in data for q in quoted):
            return True
        return any(int(n) in self.send_ids for n in _SEND_ID.findall(data))

    def named_in_email(self, data: bytes) -> bool:
        """Whether an ``.eml`` file names them, in its raw bytes or decoded."""
        return self.named_in(data) or self.named_in(_decoded(data))


def _decoded(data: bytes) -> bytes:
    """An email's headers and parts decoded (RFC 2047, base64, quoted-printable)."""
    try:
        message = email.message_from_bytes(data, policy=email.policy.default)
        texts = [f"{key}: {value}" for key, value in message.items()]
        texts += [str(p.get_content()) for p in message.walk() if not p.is_multipart()]
    except Exception:  # a damaged file: its raw bytes were checked already
        return b""
    return "\n".join(texts).encode()


def note(db: SAEngine, kind: str, paths: Iterable[Path], holder: str | None = None) -> None:
    """Register files (or an outbox folder) tailormail wrote that hold people's data."""
    rows: list[dict[str, object]] = []
    for path in paths:
        name = str(path.resolve())
        if len(name) > _MAX_PATH:
            log.warning("%s is not registered for forget: its path is too long", kind)
            continue
        rows.append({"path": name, "kind": kind, "holder": holder, "written_at": utcnow()})
    if not rows:
        return
    with session_scope(db) as session:
        # A rewritten file keeps one row, with its latest holder (a new preview replaces the
        # old); an upsert, so workers registering one outbox folder at once never collide.
        upsert(session, PersonalFileRow, rows, key=["path"])


def note_copies(
    engine: Engine, backend: object, results: Sequence[SendResult], holder: str
) -> None:
    """Register the copies a backend kept of messages rendered for ``holder`` (test sends)."""
    if isinstance(backend, KeepsCopies):
        paths = [p for p in (backend.copy_path(r) for r in results) if p is not None]
        note(engine.db, TEST_COPY, paths, holder)


def erase(engine: Engine, person: Person) -> int:
    """Delete or clean every file that names ``person``; returns how many were touched."""
    with session_scope(engine.db) as session:
        registered = [(r.path, r.kind, r.holder) for r in session.scalars(select(PersonalFileRow))]
    touched, gone = 0, []
    for name, kind, holder in registered:
        path = Path(name)
        if not path.exists():
            continue  # deleted, or on another host: its row stays for a forget run there
        if kind == OUTBOX:
            touched += _erase_emails(path, person)
        elif kind == EXPORT:
            touched += _drop_lines(path, person)
        elif holder is not None and holder in person.holders:
            path.unlink(missing_ok=True)
            gone.append(name)
            touched += 1
    settings = engine.settings
    outbox = settings.delivery.options.get(OUTBOX, {}).get("path", OUTBOX)
    touched += _erase_emails(settings.path(str(outbox)), person)
    touched += _erase_emails(settings.path(PREVIEW), person, pairs=".html")
    touched += _drop_lines(settings.path(settings.spool_dir) / "rejected.jsonl", person)
    journals = settings.path(settings.delivery.journal_dir)
    for journal in sorted(journals.glob("*.journal")) if journals.is_dir() else []:
        touched += _mask(journal, person)
    if gone:
        with session_scope(engine.db) as session:
            session.execute(delete(PersonalFileRow).where(col(PersonalFileRow.path).in_(gone)))
    return touched


def _erase_emails(folder: Path, person: Person, pairs: str | None = None) -> int:
    """Delete the ``.eml`` files of ``folder`` that name ``person`` (and, with ``pairs``,
    the file of the same name with that suffix: a preview's ``.html``)."""
    if not folder.is_dir():
        return 0
    erased = 0
    for path in sorted(folder.glob("*.eml")):
        with contextlib.suppress(FileNotFoundError):
            if person.named_in_email(path.read_bytes()):
                path.unlink()
                erased += 1
                if pairs is not None and path.with_suffix(pairs).exists():
                    path.with_suffix(pairs).unlink()
                    erased += 1
    return erased


def _drop_lines(path: Path, person: Person) -> int:
    """Rewrite a line-per-record file without the lines naming ``person`` (1 if it changed)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    lines = data.splitlines(keepends=True)
    kept = [line for line in lines if not person.named_in(line)]
    if len(kept) == len(lines):
        return 0
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"".join(kept))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return 1


def _mask(path: Path, person: Person) -> int:
    """Overwrite the address in a live file in place, byte for byte (a journal: a worker
    may append to it meanwhile, and its lines must keep their length and stay JSON)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        lowered = os.pread(fd, os.fstat(fd).st_size, 0).lower()
        hits = 0
        for spelling in person.spellings():
            start = lowered.find(spelling)
            while start >= 0:
                os.pwrite(fd, b"*" * len(spelling), start)
                hits += 1
                start = lowered.find(spelling, start + len(spelling))
        if hits:
            os.fsync(fd)
        return 1 if hits else 0
    finally:
        os.close(fd)
